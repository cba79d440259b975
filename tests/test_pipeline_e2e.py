"""The real DVC pipeline on a tiny world: dvc repro, a no-op second repro, and which stages
`dvc exp run -S ...` re-runs. Runs in a copy of the repo so the workspace is untouched."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "world": {"train_images": 48, "heldout_images": 24, "gallery_images": 80, "corpus_captions": 120,
              "circo_queries": 8, "cirr_queries": 6, "dev_queries": 4},
    "backbone": {"world_training": {"steps": 3, "batch_size": 16}},
    "keywords": {"n_process": 1},
    "train": {"steps": 4, "batch_size": 16, "checkpoint_every": 2, "log_every": 1, "validate_every": 2},
    "evaluate": {"grid_queries": 2, "grid_top_k": 3},
    "searle": {"oti_steps": 2},
}


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base[k], v) if isinstance(v, dict) else v
    return out


def sh(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    for name in ["pipeline", "stages"]:
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ["dvc.yaml", ".dvcignore", ".gitignore"]:
        shutil.copy(REPO / name, root / name)
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = str(Path(sys.executable).parent / "dvc")
    sh(root, "git", "init", "-q")
    sh(root, "git", "config", "user.email", "t@t")
    sh(root, "git", "config", "user.name", "t")
    sh(root, dvc, "init", "-q")
    sh(root, dvc, "config", "core.analytics", "false")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "tiny")
    first = sh(root, dvc, "repro")
    return root, dvc, first


def test_repro_runs_every_stage_and_writes_metrics(project):
    root, _, first = project
    assert ran(first) == {"params", "world", "backbone", "geometry", "pairs", "pair_tokens", "ingest", "keywords",
                          "tokens", "train",
                          "embed@world_circo",
                          "embed@world_cirr", "embed@world_dev", "evaluate@world_circo", "evaluate@world_cirr",
                          "evaluate@world_dev"}
    circo = yaml.safe_load((root / "metrics/evaluate/world_circo.all.json").read_text())
    assert set(circo) == {"lincir", "phi_random", "text_only", "image_only", "image_text_average"}
    headline = yaml.safe_load((root / "metrics/evaluate/world_circo.json").read_text())
    assert headline == {"world_circo": {k: v for k, v in circo["lincir"].items() if "/" not in k}}
    for scores in circo.values():
        assert {"mAP@5", "mAP@10", "mAP@25", "mAP@50", "R@5", "R@10", "R@25", "R@50"} <= set(scores)
        assert all(0 <= v <= 100 for v in scores.values())
    cirr = yaml.safe_load((root / "metrics/evaluate/world_cirr.all.json").read_text())
    assert {"R@1", "R@5", "R@10", "R@50", "subset_R@1", "subset_R@2", "subset_R@3"} <= set(cirr["lincir"])
    assert (root / "plots/world_circo_queries.png").stat().st_size > 1000
    geometry = yaml.safe_load((root / "metrics/geometry.json").read_text())
    assert set(geometry["noise"]) >= {"unif_gaussian", "none"} and "modality_gap" in geometry["backbone"]
    assert "modality_gap" in yaml.safe_load((root / "metrics/backbone.json").read_text())
    assert (root / "dvclive/train/plots/metrics/loss.tsv").read_text().count("\n") == 1 + 4
    assert "loss" in yaml.safe_load((root / "dvclive/train/metrics.json").read_text())
    assert not (root / "data/checkpoints/train.pt").exists()  # a finished run leaves nothing to resume


def test_forced_retrain_changes_no_tracked_file(project):
    """No wall-clock value in what DVC hashes, and --force trains anew to the same phi."""
    root, dvc, _ = project
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "repro")
    out = sh(root, dvc, "repro", "--force", "--single-item", "train")
    assert "resuming" not in out
    assert sh(root, "git", "status", "--porcelain").strip() == ""


def test_second_repro_runs_nothing(project):
    root, dvc, _ = project
    assert ran(sh(root, dvc, "repro")) == set()


def test_noise_and_supervision_experiments_rerun_only_train_and_evaluate(project):
    """One experiment changes both: the stages it re-runs are a superset of what either change
    alone would re-run, so each alone re-runs at most these."""
    root, dvc, _ = project
    out = sh(root, dvc, "exp", "run", "-S", "noise=gaussian", "-S", "train.supervision=image_latent")
    assert ran(out) == {"params", "train", "evaluate@world_circo", "evaluate@world_cirr", "evaluate@world_dev"}
    shown = sh(root, dvc, "exp", "show", "--no-pager", "--md")
    assert "gaussian" in shown and "image_latent" in shown
    assert (root / "data/pairs/latents.npy").is_file()  # what image_latent's phi reads
    # metrics: LinCIR's headline numbers under one consistent name each; no baseline, no timing
    header = sh(root, dvc, "exp", "show", "--no-pager", "--csv").splitlines()[0].split(",")
    assert "world_circo.mAP@5" in header and "world_cirr.R@1" in header and "loss" in header
    assert not any(h.startswith("metrics/") or "phi_random" in h or "captions_per_s" in h or "seconds" in h
                   for h in header)
    changed = sh(root, dvc, "exp", "show", "--no-pager", "--csv", "--only-changed").splitlines()[0].split(",")
    assert "noise" in changed and "train.supervision" in changed and len(changed) < 40


def test_masking_experiment_reruns_neither_spacy_nor_an_image_encoder(project):
    root, dvc, _ = project
    out = sh(root, dvc, "exp", "run", "-S", "masking.strategy=nouns")
    assert ran(out) == {"params", "tokens", "pair_tokens", "train", "evaluate@world_circo", "evaluate@world_cirr",
                        "evaluate@world_dev"}


def test_a_method_reruns_only_training_and_scoring(project):
    """Never spaCy, the tokens, the pairs or the gallery embeddings: only what the method trains."""
    root, dvc, _ = project
    out = sh(root, dvc, "exp", "run", "-S", "method=masked_inversion", "-S", "masked_inversion.mask=oracle")
    assert ran(out) == {"params", "train", "evaluate@world_circo", "evaluate@world_cirr", "evaluate@world_dev"}
    assert "masked_inversion: images=" in out and "iou_with_true_masks=1.000" in out
    assert (root / "data/train/masked_pairs.parquet").is_file()
    circo = yaml.safe_load((root / "metrics/evaluate/world_circo.all.json").read_text())
    assert "masked_inversion" in circo and "lincir" not in circo  # the trained phi's row says which method


def test_a_knob_of_a_method_not_selected_retrains_nothing(project):
    root, dvc, _ = project
    assert ran(sh(root, dvc, "exp", "run", "-S", "searle.oti_steps=3")) == {"params"}


def test_an_unsafe_benchmark_name_never_reaches_the_shell(project, tmp_path):
    root, dvc, _ = project
    bad = tmp_path / "bad"
    shutil.copytree(root, bad, ignore=shutil.ignore_patterns("data", "dvclive", "plots", "metrics"))
    params = yaml.safe_load((bad / "params.yaml").read_text())
    params["benchmarks"]['x"; touch pwned; "'] = params["benchmarks"]["world_cirr"]
    (bad / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = subprocess.run([dvc, "repro"], cwd=bad, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode != 0
    assert "benchmark name" in done.stdout + done.stderr and "is not allowed" in done.stdout + done.stderr
    assert not (bad / "pwned").exists() and not (bad / "data/world").exists()  # stopped before any work


def test_a_code_change_retrains_from_step_zero(project):
    root, dvc, _ = project
    noise = root / "pipeline" / "noise.py"
    noise.write_text(noise.read_text() + "\n# an edit\n")
    out = sh(root, dvc, "repro")
    assert "train" in ran(out) and "resuming" not in out


def test_a_bad_registry_param_is_one_clear_message(project):
    root, _, _ = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    bad = root.parent / (root.name + "-bad")
    shutil.copytree(root, bad, ignore=shutil.ignore_patterns(".git", ".dvc"))
    params["noise"] = "foo"
    (bad / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run([sys.executable, "stages/train.py"], cwd=bad, capture_output=True, text=True)
    assert done.returncode == 1
    assert "unknown noise 'foo'; valid names: chi2, exponential, gaussian, none, student_t, unif_gaussian, uniform" \
        in done.stderr
    assert "Traceback" not in done.stderr
