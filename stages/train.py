"""DVC stage `train`: phi trained by the method params.yaml's `method` names (pipeline/methods/;
params: method and its section, train). LinCIR, the default, trains on the token arrays. phi's
architecture and optimiser are the method's authors' or, with `train.recipe: controlled`,
LinCIR's for every method (pipeline/training/recipe.py).

Writes phi.pt (trained) and phi_init.pt (the same phi at random initialisation, scored as a
baseline) and the loss curve with DVCLive. logs/train.json says how long training took (not an
output: a wall time is no result to cache). A killed run resumes from its checkpoint when config,
inputs and code are the same (the fingerprint); a finished run deletes it, so
`dvc repro --force` trains anew.
"""
import json
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

from dvclive import Live
from pipeline.core import stage
from pipeline.core.io import file_sha256, write_json
from pipeline.core.params import value
from pipeline.evaluation.benchmarks import from_params
from pipeline.evaluation.prompts import prompt_for
from pipeline.evaluation.queries import check_template, phi_score
from pipeline.methods import Run, method_config, phi_recipe
from pipeline.model import backbone as backbones
from pipeline.model.phi import save_phi
from pipeline.model.text_encoder import text_tower
from pipeline.training.loop import Validation, new_phi, train_config

PARAMS = ["method", "${method}", "noise", "train.steps", "train.batch_size", "train.lr", "train.weight_decay",
          "train.phi_variant", "train.dropout", "train.seed", "train.cache_targets", "train.truncate",
          "train.bucket_by_length", "train.precision", "train.compile", "train.log_every", "train.validate_every",
          "train.validate_on", "train.validate_metric", "train.patience", "train.recipe",
          "benchmarks.${train.validate_on}", "evaluate.template", "evaluate.prompt"]
UNTRACKED = ["train.checkpoint_every"]  # when a killed run can resume from: the same phi
TIMING = Path("logs/train.json")


def main(params: dict, args) -> None:
    cfg = train_config(params)
    name, method, config = method_config(params)
    recipe = phi_recipe(method, config, cfg)
    device = stage.device()
    backbone = backbones.load(args.backbone, device)
    tower = text_tower(backbone.model, backbone.tokenizer)
    embed_dim = backbones.embed_dim(backbone)
    # a checkpoint is resumed only by a run of the same method and config on the same inputs with the same code
    inputs = [args.tokens / "ids.npy", args.tokens / "masked.npy", args.pairs / "latents.npy", args.pairs / "views.npy",
              args.pair_tokens / "ids.npy", args.pair_tokens / "masked.npy", args.pairs / "keywords.parquet"]
    fingerprint = "-".join([json.loads(args.backbone.read_text())["sha256"], *(file_sha256(f) for f in inputs), name,
                            json.dumps(asdict(config), sort_keys=True), stage.code_fingerprint()])
    phi_config = recipe.phi_config(embed_dim, tower.width)
    lead = int(os.environ.get("RANK", "0")) == 0  # under torchrun, one process writes
    if lead:
        save_phi(new_phi(tower, embed_dim, cfg, device, recipe), phi_config, args.out / "phi_init.pt")
        shutil.rmtree(args.live, ignore_errors=True)  # a resumed run logs its earlier points again from the checkpoint
    with (Live(str(args.live), dvcyaml=None, save_dvc_exp=False) if lead else nullcontext()) as live:
        def log(step: int, values: dict) -> None:
            live.step = step
            for key, value in values.items():
                live.log_metric(key, value)
            live.next_step()

        validation = None
        if cfg.validate_every:
            dev = from_params(params, cfg.validate_on)
            # the prompt evaluate queries this method's phi with on a benchmark of the dev set's kind
            prompt = prompt_for(value(params, "evaluate.prompt", str), name, dev.name,
                                check_template(value(params, "evaluate.template", str)))
            score = phi_score(dev, backbone, args.dev_gallery, prompt, cfg.validate_metric, device)
            validation = Validation(score, cfg.validate_every)
        # a resumed run's time covers only its own part of the training
        resumed, start = args.checkpoint.is_file(), time.perf_counter()
        phi = method.train(Run(backbone, tower, embed_dim, cfg, config, device, args.checkpoint, fingerprint,
                               args.tokens, args.pairs, args.pair_tokens, args.out, log, validation, recipe))
        seconds = time.perf_counter() - start
        if lead and validation:
            live.summary.update({f"best_val_{cfg.validate_metric}": validation.best_score,
                                 "best_step": validation.best_step})
    if lead:
        save_phi(phi, phi_config, args.out / "phi.pt")
        args.checkpoint.unlink(missing_ok=True)  # finished: nothing to resume, never a stale state
        write_json(TIMING, {"method": name, "recipe": cfg.recipe, "seconds": round(seconds, 1), "steps": cfg.steps,
                            "batch_size": cfg.batch_size, "device": device, "resumed": resumed})
        print(f"train: method={name} ({cfg.recipe} recipe, phi {recipe.phi}), {cfg.steps} steps of batch {cfg.batch_size}, {seconds:.0f} s")


if __name__ == "__main__":
    stage.run(main, PARAMS, UNTRACKED, stage.arguments(
        __doc__, backbone="the backbone stage's backbone.json", tokens="the tokens stage's folder",
        pairs="the pairs stage's folder", pair_tokens="the pair_tokens stage's folder",
        dev_gallery="the embed stage's folder of the benchmark phi is selected on (train.validate_on)",
        out="the stage's folder", live="DVCLive's folder", checkpoint="where a killed run resumes from"))
