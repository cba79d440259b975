"""What `dvc exp run -S ...` (or an edit of a code file) re-runs, read from dvc.yaml alone: a stage
re-runs when a param it lists or a file under one of its deps changed, and then its outputs count
as changed for the stages after it; the params stage's output never changes (it only says that
every check passed), so nothing re-runs through it. That is an upper bound: DVC also skips a stage
whose inputs came out byte-identical. tests/test_pipeline_e2e.py checks the model once against the
real `dvc exp run`; here every promise the README makes is checked with it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
CONSTANT_OUTPUTS = {"data/params"}  # written the same whatever changed


def lookup(params: dict, key: str):
    node = params
    for part in key.split("."):
        node = node[part]
    return node


def interpolate(text: str, params: dict, variables: dict) -> str:
    return re.sub(r"\$\{([^}]+)\}", lambda m: str(variables[m.group(1)] if m.group(1) in variables
                                                  else lookup(params, m.group(1))), text)


def resolved_stages(params: dict) -> dict[str, dict]:
    """dvc.yaml's stages, `foreach` expanded and `${...}` interpolated as DVC does with `params`."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in spec.items():
        items = {None: {}} if "foreach" not in stage else {
            key: {"key": key, **{f"item.{k}": v for k, v in item.items()}}
            for key, item in lookup(params, stage["foreach"][2:-1]).items()}
        for key, variables in items.items():
            body = stage.get("do", stage)

            def paths(entries, variables=variables):
                return [interpolate(next(iter(e)) if isinstance(e, dict) else str(e), params, variables)
                        for e in entries or []]

            out[name if key is None else f"{name}@{key}"] = {
                "deps": paths(body.get("deps")), "params": paths(body.get("params")),
                "outs": paths(body.get("outs")) + paths(body.get("metrics")) + paths(body.get("plots"))}
    return out


def under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/") or folder.startswith(path.rstrip("/") + "/")


def reruns(changes: dict[str, object] | None = None, files: tuple[str, ...] = ()) -> set[str]:
    """The stages that `dvc exp run -S key=value ...` (changes) re-runs, with `files` edited too."""
    changes = changes or {}
    new = yaml.safe_load(yaml.safe_dump(PARAMS))
    for key, value in changes.items():
        *parents, last = key.split(".")
        (lookup(new, ".".join(parents)) if parents else new)[last] = value
    old_stages, new_stages = resolved_stages(PARAMS), resolved_stages(new)
    changed_paths = set(files) | ({"params.yaml"} if changes else set())
    ran: set[str] = set()
    progress = True
    while progress:
        progress = False
        for name, stage in new_stages.items():
            if name in ran:
                continue
            before = old_stages.get(name)
            params_changed = before is None or stage["params"] != before["params"] or any(
                _value(PARAMS, p) != _value(new, p) for p in stage["params"])
            deps_changed = any(under(d, c) for d in stage["deps"] for c in changed_paths)
            if params_changed or deps_changed or stage["deps"] != before["deps"]:
                ran.add(name)
                changed_paths |= {o for o in stage["outs"] if o not in CONSTANT_OUTPUTS}
                progress = True
    return ran


def _value(params: dict, key: str):
    try:
        return lookup(params, key)
    except (KeyError, TypeError):
        return None


EVALUATE = {f"evaluate@{name}" for name in PARAMS["benchmarks"]}
EMBED = {f"embed@{name}" for name in PARAMS["benchmarks"]}


def test_nothing_changed_reruns_nothing():
    assert reruns() == set()


@pytest.mark.parametrize("kind", ["gaussian", "none", "chi2"])
def test_a_noise_experiment_reruns_params_train_and_evaluate_only(kind):
    assert reruns({"noise": kind}) == {"params", "train", *EVALUATE}


def test_supervision_and_noise_scale_rerun_the_same_and_the_gap_table():
    assert reruns({"lincir.supervision": "image_latent"}) == {"params", "train", *EVALUATE}
    assert reruns({"lincir.noise_scale": 2.0}) == {"params", "geometry", "train", *EVALUATE}


def test_a_masking_experiment_reruns_neither_spacy_nor_an_image_encoder():
    assert reruns({"masking.strategy": "nouns"}) == {"params", "tokens", "pair_tokens", "train", *EVALUATE}


def test_a_method_reruns_only_training_and_scoring():
    assert reruns({"method": "pic2word"}) == {"params", "train", *EVALUATE}
    assert reruns({"method": "masked_inversion", "masked_inversion.mask": "oracle"}) == {"params", "train",
                                                                                        *EVALUATE}


def test_the_controlled_recipe_and_the_prompt_rerun_only_training_and_scoring():
    assert reruns({"train.recipe": "controlled"}) == {"params", "train", *EVALUATE}
    # evaluate.prompt also reaches training: phi is selected on the dev set in its evaluation prompt
    assert reruns({"evaluate.prompt": "template"}) == {"params", "train", *EVALUATE}
    assert reruns({"method": "pic2word", "train.recipe": "controlled"}) == {"params", "train", *EVALUATE}


def test_more_augmented_views_re_embed_the_pairs_but_no_benchmark():
    assert reruns({"pairs.views": 8}) == {"params", "pairs", "pair_tokens", "train", *EVALUATE}


def test_a_knob_of_a_method_not_selected_retrains_nothing():
    assert PARAMS["method"] != "searle"
    assert reruns({"searle.oti_steps": 3}) == {"params"}


def test_knobs_that_change_no_output_rerun_nothing_but_the_check():
    for key, value in {"keywords.n_process": 1, "keywords.batch_size": 64, "tokens.n_process": 1,
                       "embed.batch_size": 8, "embed.num_workers": 2, "train.checkpoint_every": 7,
                       "executor.kind": "ray", "executor.address": "10.0.0.1:6379", "executor.block_rows": 5}.items():
        assert reruns({key: value}) == {"params"}, key


def test_a_new_backbone_reruns_everything_downstream_of_it_but_the_text_side():
    ran = reruns({"backbone.world_training.steps": 10})
    assert ran == {"params", "backbone", "geometry", "pairs", "pair_tokens", "train", *EMBED, *EVALUATE}
    assert reruns({"backbone.model": "ViT-B-32"}) >= {"tokens", "pair_tokens"}  # another tokenizer


def test_an_edit_of_the_noise_module_reruns_what_imports_it():
    assert reruns(files=("pipeline/model/noise.py",)) == {"params", "geometry", "train", *EVALUATE}


def test_an_edit_of_the_metrics_rescored_every_benchmark_without_retraining_phi():
    ran = reruns(files=("pipeline/evaluation/metrics.py",))
    assert EVALUATE <= ran and "tokens" not in ran and "keywords" not in ran


def test_the_model_agrees_with_a_constructed_graph():
    """The model itself: a change flows through outputs, but not through the params stage's."""
    stages = resolved_stages(PARAMS)
    assert stages["train"]["deps"][0] == "data/params/checked" and "data/params" in stages["params"]["outs"]
    assert "data/embed/world_dev" in stages["train"]["deps"]  # ${train.validate_on} interpolated
    assert reruns({"train.validate_on": "world_cirr"}) == {"params", "train", *EVALUATE}
