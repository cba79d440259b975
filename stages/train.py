"""DVC stage `train`: phi trained by the method params.yaml's `method` names (pipeline/methods/;
params: method and its section, noise, train). LinCIR, the default, trains on the token arrays.

Writes data/train/phi.pt (trained) and data/train/phi_init.pt (the same phi at random
initialisation, scored as a baseline) and the loss curve with DVCLive (dvclive/train).
logs/train.json says how long training took (not an output: a wall time is no result to cache).
A killed run resumes from data/checkpoints/train.pt when config, inputs and code are the
same (the fingerprint); a finished run deletes it, so `dvc repro --force` trains anew.
"""
from pathlib import Path
import json
import os
from dataclasses import asdict
import shutil
import sys
import time
from contextlib import nullcontext

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dvclive import Live

from pipeline import backbone as B
from pipeline import gallery
from pipeline.benchmarks import from_params
from pipeline.core import stage
from pipeline.core.errors import PipelineError
from pipeline.core.params import section, typed
from pipeline.methods import Run, method_config
from pipeline.phi import save_phi
from pipeline.retrieval import EvaluateConfig, answer, query_context
from pipeline.text_encoder import text_tower
from pipeline.train import TrainConfig, Validation, new_phi, train_config

TOKENS = Path("data/tokens")
PAIRS = Path("data/pairs")
PAIR_TOKENS = Path("data/pair_tokens")
OUT = Path("data/train")
CHECKPOINT = Path("data/checkpoints/train.pt")
LIVE = Path("dvclive/train")
TIMING = Path("logs/train.json")


def dev_validation(params: dict, cfg: TrainConfig, backbone, device: str) -> Validation:
    """Scores phi like evaluate@<validate_on> does for LinCIR, on the dev benchmark's gallery."""
    bench = from_params(params, cfg.validate_on)
    bench.require_targets()
    names, latents, indexes = gallery.load(Path("data/embed") / cfg.validate_on)
    template = typed(EvaluateConfig, section(params, "evaluate"), "evaluate").template

    def score(phi) -> float:
        ctx = query_context(backbone, names, latents, phis={"trained": phi}, template=template,
                            normalize_image_latent=False, device=device)
        scores = bench.score(*answer(bench, ctx, indexes, names, "lincir"))
        if cfg.validate_metric not in scores:
            raise PipelineError(f"train.validate_metric {cfg.validate_metric!r} is not a metric of {cfg.validate_on}; "
                                f"valid: {', '.join(scores)}")
        return scores[cfg.validate_metric]

    return Validation(score, cfg.validate_every)


def main(params: dict) -> None:
    cfg = train_config(params)
    name, method, config = method_config(params)
    device = stage.device()
    backbone = B.load(Path("data/backbone/backbone.json"), device)
    tower = text_tower(backbone.model, backbone.tokenizer)
    embed_dim = B.embed_dim(backbone)
    # a checkpoint is resumed only by a run of the same method and config on the same inputs with the same code
    inputs = [TOKENS / "ids.npy", TOKENS / "masked.npy", PAIRS / "latents.npy", PAIR_TOKENS / "ids.npy",
              PAIR_TOKENS / "masked.npy", PAIRS / "keywords.parquet"]
    fingerprint = "-".join([json.loads(Path("data/backbone/backbone.json").read_text())["sha256"],
                            *(B.file_sha256(f) for f in inputs), name, json.dumps(asdict(config), sort_keys=True),
                            stage.code_fingerprint()])
    phi_config = {"variant": cfg.phi_variant, "embed_dim": embed_dim, "token_width": tower.width,
                  "dropout": cfg.dropout}
    lead = int(os.environ.get("RANK", "0")) == 0  # under torchrun, one process writes
    if lead:
        save_phi(new_phi(tower, embed_dim, cfg, device), phi_config, OUT / "phi_init.pt")
    if lead:  # a resumed run logs its earlier points again from the checkpoint: no duplicate rows
        shutil.rmtree(LIVE, ignore_errors=True)
    with (Live(str(LIVE), dvcyaml=None, save_dvc_exp=False) if lead else nullcontext()) as live:
        def log(step: int, values: dict) -> None:
            live.step = step
            for key, value in values.items():
                live.log_metric(key, value)
            live.next_step()

        validation = dev_validation(params, cfg, backbone, device) if cfg.validate_every else None
        # a resumed run's time covers only its own part of the training
        resumed, start = CHECKPOINT.is_file(), time.perf_counter()
        phi = method.train(Run(backbone, tower, embed_dim, cfg, config, device, CHECKPOINT, fingerprint,
                               TOKENS, PAIRS, PAIR_TOKENS, OUT, log, validation))
        seconds = time.perf_counter() - start
        if lead and validation:
            live.summary.update({f"best_val_{cfg.validate_metric}": validation.best_score,
                                 "best_step": validation.best_step})
    if lead:
        save_phi(phi, phi_config, OUT / "phi.pt")
        CHECKPOINT.unlink(missing_ok=True)  # finished: nothing to resume, never a stale state
        stage.write_json(TIMING, {"method": name, "seconds": round(seconds, 1), "steps": cfg.steps,
                                  "batch_size": cfg.batch_size, "device": device, "resumed": resumed})
        print(f"train: method={name}, {cfg.steps} steps of batch {cfg.batch_size}, noise={cfg.noise}, "
              f"{seconds:.0f} s")


if __name__ == "__main__":
    stage.run(main)
