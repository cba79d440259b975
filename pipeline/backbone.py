"""The frozen vision-language model: any open_clip model by name, with weights from an
open_clip pretrained tag or a local checkpoint file, through one loader.

The project's own small architecture `lincir-world` is registered with open_clip here
(pipeline/model_configs/), so it is created, saved and loaded like any other model.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import open_clip
import torch

from pipeline.errors import PipelineError

open_clip.add_model_config(Path(__file__).parent / "model_configs")


@dataclass
class Backbone:
    model: torch.nn.Module  # an open_clip CLIP, frozen
    preprocess: Callable  # PIL image -> tensor, the model's own eval transform
    tokenizer: Callable
    name: str
    pretrained: str


def get_tokenizer(model_name: str):
    check_model_name(model_name)
    return open_clip.get_tokenizer(model_name)


def check_model_name(model_name: str) -> None:
    if model_name not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if model_name.lower()[:4] in m.lower()][:12]
        raise PipelineError(f"backbone.model {model_name!r} is not an open_clip model name; "
                            f"similar names: {', '.join(close) or 'none'} (see open_clip.list_models())")


def create(model_name: str, pretrained: str | None = None, device: str = "cpu") -> Backbone:
    """Creates `model_name`; `pretrained` is an open_clip tag, a checkpoint path or None (random)."""
    check_model_name(model_name)
    if pretrained and not Path(pretrained).is_file() and pretrained not in open_clip.list_pretrained_tags_by_model(model_name):
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise PipelineError(f"backbone.pretrained {pretrained!r} is neither a checkpoint file nor a tag of "
                            f"{model_name} (tags: {', '.join(tags) or 'none'})")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained or None, device=device)
    except Exception as e:  # offline hub, corrupt file: say what to do instead of a deep traceback
        raise PipelineError(
            f"could not load {model_name} weights {pretrained!r}: {type(e).__name__}: {e}\n"
            f"Without network, pre-fetch the weights on a connected machine (open_clip caches them under "
            f"~/.cache/huggingface, or set HF_HOME) or set backbone.pretrained to a local checkpoint file.") from None
    return Backbone(model, preprocess, open_clip.get_tokenizer(model_name), model_name, pretrained or "")


def freeze(backbone: Backbone) -> Backbone:
    backbone.model.eval().requires_grad_(False)
    return backbone


def load(identity_file: Path, device: str = "cpu") -> Backbone:
    """Loads the frozen backbone that the backbone stage recorded in `identity_file`."""
    ident = json.loads(Path(identity_file).read_text())
    return freeze(create(ident["model"], ident["pretrained"], device))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(model: torch.nn.Module, path: Path, extra: dict | None = None) -> None:
    """Written atomically: a killed run never leaves a half-written checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"state_dict": model.state_dict(), **(extra or {})}, tmp)
    tmp.replace(path)


def resolve_weights(model_name: str, pretrained: str) -> Path:
    """A local checkpoint path for `pretrained` (a file, or an open_clip tag fetched into its cache)."""
    if Path(pretrained).is_file():
        return Path(pretrained)
    check_model_name(model_name)
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise PipelineError(f"backbone.pretrained {pretrained!r} is neither a checkpoint file nor a tag of "
                            f"{model_name} (tags: {', '.join(tags) or 'none'})")
    try:
        return Path(open_clip.download_pretrained(cfg))
    except Exception as e:
        raise PipelineError(
            f"could not fetch {model_name}/{pretrained}: {type(e).__name__}: {e}\n"
            f"Without network, fetch it on a connected machine with "
            f"`python -c \"import open_clip; open_clip.create_model('{model_name}', pretrained='{pretrained}')\"`, "
            f"copy the Hugging Face cache (~/.cache/huggingface, or $HF_HOME) here, or set backbone.pretrained "
            f"to the checkpoint file.") from None


@torch.no_grad()
def embed_dim(backbone: Backbone) -> int:
    """Size of the joint embedding space (phi's input)."""
    return backbone.model.encode_text(backbone.tokenizer(["a"]).to(next(backbone.model.parameters()).device)).shape[1]
