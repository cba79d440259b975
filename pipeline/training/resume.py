"""Resuming a killed training run: its state saved every `checkpoint_every` steps, and trusted
only when config, inputs and code are the same (the fingerprint)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pipeline.core.io import save_checkpoint

if TYPE_CHECKING:
    from pipeline.training.loop import TrainConfig


def resumable(checkpoint: Path, cfg: TrainConfig, fingerprint: str, device: str = "cpu") -> dict | None:
    """The saved state of a killed run, if `checkpoint` is from a run of this config on these inputs
    with this code (the fingerprint). An unreadable checkpoint is ignored with a warning: it only
    saves time, and training from step 0 gives the same phi."""
    state, problem = saved_state(checkpoint, cfg, fingerprint, device)
    if problem:
        print(f"warning: ignoring the unreadable checkpoint {checkpoint} ({problem}); training from step 0")
    return state


def saved_state(checkpoint: Path, cfg: TrainConfig, fingerprint: str, device: str = "cpu") -> tuple[dict | None, str]:
    """(the state a run of `cfg` resumes from or None, why an existing checkpoint cannot be read or "")."""
    if not Path(checkpoint).is_file():
        return None, ""
    try:
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        match = state["config"] == asdict(cfg) and state["fingerprint"] == fingerprint
        if match and not 0 < state["step"] < cfg.steps:
            raise ValueError(f"step {state['step']} is outside 1..{cfg.steps - 1}")
    except Exception as e:  # noqa: BLE001  (torch raises many kinds for a damaged file)
        return None, f"{type(e).__name__}: {str(e)[:200]}"
    return (state if match else None), ""


def save_training_state(phi, opt, step: int, cfg: TrainConfig, fingerprint: str, path: Path,
                        history: list, best: tuple | None = None) -> None:
    save_checkpoint(phi, path, extra={"optimizer": opt.state_dict(), "step": step, "config": asdict(cfg),
                                      "fingerprint": fingerprint, "history": history, "best": best})
