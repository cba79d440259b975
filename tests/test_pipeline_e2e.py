"""The real DVC pipeline on a tiny world, in a copy of the repo (the workspace is untouched): one cold
`dvc repro` of every stage, a second that runs nothing, a forced retrain that changes no tracked
file, and one `dvc exp run` whose re-run stages must be what tests/test_dvc_reruns.py's model of
dvc.yaml predicts. The other "re-runs only X" promises are checked with that model, without DVC.
Each test leaves the copy as the fixture made it, so they pass in any order."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_dvc_reruns import reruns

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "world": {"train_images": 48, "heldout_images": 24, "gallery_images": 80, "corpus_captions": 120,
              "circo_queries": 8, "cirr_queries": 6, "dev_queries": 4},
    "backbone": {"world_training": {"steps": 3, "batch_size": 16}},
    "keywords": {"n_process": 1},
    "tokens": {"n_process": 1},
    "train": {"steps": 4, "batch_size": 16, "checkpoint_every": 2, "log_every": 1, "validate_every": 2},
    "evaluate": {"grid_queries": 2, "grid_top_k": 3},
}


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base[k], v) if isinstance(v, dict) else v
    return out


def sh(cwd: Path, *cmd: str, ok: bool = True) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert (done.returncode == 0) == ok, f"{' '.join(cmd)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
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
    sh(root, "git", "commit", "-qm", "tiny")  # DVCLive reads the commit it logs against
    first = sh(root, dvc, "repro")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "repro")
    return root, dvc, first


def test_repro_runs_every_stage_and_writes_metrics(project):
    root, _, first = project
    assert ran(first) == {"params", "world", "backbone", "geometry", "pairs", "pair_tokens", "ingest", "keywords",
                          "tokens", "train", "embed@world_circo", "embed@world_cirr", "embed@world_dev",
                          "evaluate@world_circo", "evaluate@world_cirr", "evaluate@world_dev"}
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


def test_second_repro_runs_nothing(project):
    root, dvc, _ = project
    assert ran(sh(root, dvc, "repro")) == set()


def test_forced_retrain_changes_no_tracked_file(project):
    """No wall-clock value in what DVC hashes, and --force trains anew to the same phi."""
    root, dvc, _ = project
    (root / "data/checkpoints").mkdir(exist_ok=True)
    (root / "data/checkpoints/train.pt").write_bytes(b"a damaged checkpoint")  # ignored, and not called a resume
    out = sh(root, dvc, "repro", "--force", "--single-item", "train")
    assert "resuming" not in out and "ignoring the unreadable checkpoint" in out
    assert json.loads((root / "logs/train.json").read_text())["resumed"] is False
    assert sh(root, "git", "status", "--porcelain").strip() == ""


def test_an_experiment_reruns_what_the_model_of_dvc_yaml_predicts(project):
    """The canary for tests/test_dvc_reruns.py: real DVC, one experiment that changes a top-level
    param and a method knob, in a temporary copy (--temp), so the workspace stays as it was."""
    root, dvc, _ = project
    out = sh(root, dvc, "exp", "run", "--temp", "-S", "noise=gaussian", "-S", "lincir.supervision=image_latent")
    assert ran(out) == reruns({"noise": "gaussian", "lincir.supervision": "image_latent"})
    assert sh(root, "git", "status", "--porcelain").strip() == ""
    shown = sh(root, dvc, "exp", "show", "--no-pager", "--csv", "--only-changed")
    header = shown.splitlines()[0].split(",")
    assert "noise" in header and "lincir.supervision" in header


def test_an_unsafe_benchmark_name_never_reaches_the_shell(project, tmp_path):
    root, dvc, _ = project
    bad = tmp_path / "bad"
    outputs = {"data", "dvclive", "plots", "metrics"}  # the top-level ones: pipeline/data is code
    shutil.copytree(root, bad, ignore=lambda folder, names: outputs & set(names) if Path(folder) == root else [])
    params = yaml.safe_load((bad / "params.yaml").read_text())
    params["benchmarks"]['x"; touch pwned; "'] = params["benchmarks"]["world_cirr"]
    (bad / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh(bad, dvc, "repro", ok=False)
    assert "benchmark name" in out and "is not allowed" in out
    assert not (bad / "pwned").exists() and not (bad / "data/world").exists()  # stopped before any work


def test_a_bad_registry_param_is_one_clear_message(tmp_path, stage_cli):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["noise"] = "foo"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code, err = stage_cli(tmp_path, "train")
    assert code == 1
    assert "unknown noise 'foo'; valid names: chi2, exponential, gaussian, none, student_t, unif_gaussian, uniform" \
        in err
    assert "Traceback" not in err


PLOTS_TEMPLATE = REPO / ".vega" / "dvc_plots.html"  # written by `make setup` (pipeline/tools/plots_page.py)
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs Debian's chromium and chromium-driver (`make test` installs them as root)")
@pytest.mark.skipif(not PLOTS_TEMPLATE.is_file(), reason="no .vega/dvc_plots.html: `make setup` writes it (needs npm)")
def test_dvc_plots_show_draws_every_plot_offline(project, monkeypatch):
    """`dvc plots show` with the template `make setup` configures, opened in headless Chromium with every
    network request refused: each declared Vega plot draws a canvas with ink, each PNG loads."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    root, dvc, _ = project
    sh(root, dvc, "config", "--local", "plots.html_template", str(PLOTS_TEMPLATE))  # as make setup does
    try:
        declared = json.loads(subprocess.run([dvc, "plots", "show", "--json"], cwd=root, capture_output=True,
                                             text=True, check=True).stdout)["data"]
        page = Path(re.search(r"file://(\S+)", sh(root, dvc, "plots", "show"))[1])
    finally:
        sh(root, dvc, "config", "--local", "--unset", "plots.html_template")
    vega = sorted(name for name, items in declared.items() if any(i["type"] == "vega" for i in items))
    images = sorted(name for name, items in declared.items() if any(i["type"] == "image" for i in items))
    assert len(vega) == 3 and len(images) == 3, declared.keys()  # loss, validation, noise norms; 3 query grids
    html = page.read_text()
    assert not re.search(r"<script[^>]+src=", html) and "cdn.jsdelivr" not in html  # nothing to fetch

    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager must not download a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900",
                 "--disable-background-networking", "--host-resolver-rules=MAP * ~NOTFOUND",
                 "--proxy-server=127.0.0.1:9"):  # no name resolves, every request goes to a closed port
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(page.as_uri())
        drawn = """return [...document.querySelectorAll('.vega-embed')].map(div => {
            const c = div.querySelector('canvas');
            if (!c || !c.width) return [div.id, 0];
            const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let ink = 0;
            for (let i = 0; i < px.length; i += 4) if (px[i + 3] > 0 && Math.min(px[i], px[i + 1], px[i + 2]) < 200) ink++;
            return [div.id, ink];
        })"""
        WebDriverWait(driver, 30).until(lambda d: len(d.execute_script(drawn)) == len(vega)
                                        and all(ink > 500 for _, ink in d.execute_script(drawn)))
        loaded = driver.execute_script(
            "return [...document.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0).length")
        assert loaded == len(images)
    finally:
        driver.quit()
