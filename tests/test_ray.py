"""executor: ray on a real two-node Ray cluster on 127.0.0.1 (pipeline/tools/ray_cluster.py, one CPU a node):
the keywords, tokens and embed stages run through the real `dvc repro` give byte-identical outputs
to the local executor's, a worker killed mid-run is replaced and the output is still identical,
and an address where no cluster answers is one error line within seconds."""
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml
from test_pipeline_e2e import merge, ran, sh

from pipeline.tools.ray_cluster import LocalCluster, free_port

pytest.importorskip("ray", reason="Ray is the `ray` extra: pip install -e '.[ray]' (make test installs it)")

REPO = Path(__file__).resolve().parents[1]
STAGES = ["keywords", "tokens", "embed@world_circo"]
OUTPUTS = ["data/keywords", "data/tokens", "data/embed/world_circo"]
TINY = {
    # 1500 captions: spaCy tags them for a few seconds, long enough to kill a worker mid-run
    "world": {"train_images": 24, "heldout_images": 8, "gallery_images": 40, "corpus_captions": 1500,
              "circo_queries": 6, "cirr_queries": 4, "dev_queries": 4},
    "backbone": {"world_training": {"steps": 2, "batch_size": 8}},
    "keywords": {"n_process": 1},
    "tokens": {"n_process": 1},
    "embed": {"batch_size": 8},
    "train": {"validate_every": 0, "patience": 0},
    "executor": {"block_rows": 100},  # 15 tasks: both nodes get some, and a retry redoes 100 captions
}


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under the compared outputs, by path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for out in OUTPUTS for p in sorted((root / out).rglob("*")) if p.is_file()}


def set_executor(root: Path, **executor) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["executor"].update(executor)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(nodes=2, cpus=1) as running:
        yield running


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the repo with a tiny world, the three stages (and what they need) run locally by
    `dvc repro`, committed: the local outputs' digests are the reference."""
    root = tmp_path_factory.mktemp("ray-project")
    for name in ["pipeline", "stages"]:
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ["dvc.yaml", ".dvcignore", ".gitignore"]:
        shutil.copy(REPO / name, root / name)
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    assert params["executor"]["kind"] == "local"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = str(Path(sys.executable).parent / "dvc")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@t"], ["git", "config", "user.name", "t"],
                [dvc, "init", "-q"], [dvc, "config", "core.analytics", "false"]):
        sh(root, *cmd)
    sh(root, dvc, "repro", *STAGES)
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "local")
    return root, dvc, digests(root)


def test_ray_outputs_equal_local_outputs_byte_for_byte(cluster, project):
    root, dvc, local = project
    set_executor(root, kind="ray", address=cluster.address)
    try:
        # the executor is untracked: only the params check re-runs (params.yaml is its file dep), so
        # the three stages are forced
        assert ran(sh(root, dvc, "repro", *STAGES)) == {"params"}
        out = sh(root, dvc, "repro", "--force", "--single-item", *STAGES)
        assert ran(out) == set(STAGES)
        assert f"ray at {cluster.address}" in out  # the progress bars say where the work ran
        assert digests(root) == local
        lock, committed = (yaml.safe_load(text)["stages"] for text in
                           ((root / "dvc.lock").read_text(), sh(root, "git", "show", "HEAD:dvc.lock")))
        assert all(lock[s]["outs"] == committed[s]["outs"] for s in STAGES)  # DVC recorded the same hashes
    finally:
        sh(root, "git", "checkout", "params.yaml")


class Progress:
    """A process's stderr read as it comes: the last percentage its tqdm bar printed."""

    def __init__(self, proc: subprocess.Popen):
        self.text = ""
        threading.Thread(target=self._read, args=(proc.stderr,), daemon=True).start()

    def _read(self, stream) -> None:
        for chunk in iter(lambda: stream.read(64), ""):
            self.text += chunk

    def percent(self) -> int:
        found = re.findall(r"keywords \(ray at [^)]*\):\s+(\d+)%", self.text)
        return int(found[-1]) if found else 0


def test_a_worker_killed_mid_run_is_replaced_and_the_output_is_identical(cluster, project):
    root, dvc, local = project
    set_executor(root, kind="ray", address=cluster.address)
    try:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([dvc, "repro", "--force", "--single-item", "keywords"], cwd=root, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        progress = Progress(proc)
        before, killed, replaced = set(), None, set()
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            workers = set(cluster.worker_pids("MapWorker"))
            if killed is None:
                before |= workers
                if workers and 0 < progress.percent() < 70:  # rows already tagged, more to come
                    killed = min(workers)
                    psutil.Process(killed).kill()  # by the id Ray's process table gives, never by name
            elif workers - before:
                replaced = workers - before  # Ray started a new actor in its place
                break
            time.sleep(0.05)
        assert killed is not None, f"no worker was seen mid-run:\n{progress.text[-2000:]}"
        assert proc.wait(timeout=120) == 0, progress.text[-3000:]
        assert replaced, "Ray started no actor in place of the killed one"
        assert digests(root) == local
    finally:
        sh(root, "git", "checkout", "params.yaml")


def test_a_stage_killed_mid_run_on_ray_leaves_no_output_and_runs_again_whole(cluster, project):
    """The driver killed while its workers tag: no keywords.parquet (the table is written under a
    temporary name, renamed only when whole), DVC sees the stage as not run, and `dvc repro` runs
    it again to the same bytes."""
    root, dvc, local = project
    set_executor(root, kind="ray", address=cluster.address)
    try:
        proc = subprocess.Popen([sys.executable, "stages/keywords.py", "--captions", "data/ingest/captions.parquet",
                                 "--out", "data/keywords"], cwd=root, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        progress = Progress(proc)
        deadline = time.monotonic() + 120
        while proc.poll() is None and progress.percent() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"the stage ended before it could be killed:\n{progress.text[-2000:]}"
        proc.kill()  # by the id Popen gave, as a crash or an out-of-memory kill would
        proc.wait()
        assert not (root / "data/keywords/keywords.parquet").exists()
        assert "keywords" in sh(root, dvc, "status", "keywords")  # changed: DVC caches nothing of it
    finally:
        sh(root, "git", "checkout", "params.yaml")
    # DVC would check the complete table out of its run cache; forced, the stage runs again (locally
    # now: the same bytes either way)
    assert "Running stage 'keywords'" in sh(root, dvc, "repro", "--force", "--single-item", "keywords")
    assert digests(root) == local


def test_an_address_where_no_cluster_answers_is_one_error_line_within_seconds(project):
    root, _, _ = project
    dead = f"127.0.0.1:{free_port()}"
    set_executor(root, kind="ray", address=dead)
    try:
        started = time.monotonic()
        done = subprocess.run([sys.executable, "stages/keywords.py", "--captions", "data/ingest/captions.parquet",
                               "--out", "data/keywords-dead"], cwd=root, capture_output=True, text=True, timeout=60)
        took = time.monotonic() - started
    finally:
        sh(root, "git", "checkout", "params.yaml")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"error: no Ray cluster answers at {dead}" in done.stderr.strip().splitlines()[-1]
    assert took < 20  # importing spaCy and the 5 s connection timeout, not Ray's minute of retries
    assert not (root / "data/keywords-dead/keywords.parquet").exists()
