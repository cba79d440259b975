"""`lincir perf gpu`: its dry run goes through every section on the CPU without the packages the GPU
machine lacks and writes the keys a real run writes; a failing or slow section is recorded and the
next one runs; the carried wheels install on a clean path."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.tools.cli import main
from pipeline.tools.perf import gpu

ROOT = Path(__file__).resolve().parents[1]
MISSING_ON_GPU_MACHINE = ["polars", "faiss", "spacy", "dvc", "dvclive"]  # the device notes' list


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The dry run, in a process where importing any of MISSING_ON_GPU_MACHINE fails."""
    out = tmp_path_factory.mktemp("perf_gpu")
    code = (f"import sys\nfor name in {MISSING_ON_GPU_MACHINE!r}:\n    sys.modules[name] = None\n"
            "from pipeline.tools.perf import main\nsys.exit(main(['gpu', '--dry-run', '--out', sys.argv[1]]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "TQDM_DISABLE": "1"}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout, time.monotonic() - start


def test_dry_run_runs_every_section_without_the_packages_the_gpu_machine_lacks(dry_run):
    out, stdout, seconds = dry_run
    report = json.loads((out / "gpu.json").read_text())
    sections = report["sections"]
    assert [name for name in sections] == [s.name for s in gpu.plan(gpu.REAL, 790.0, 0)]
    assert {name: s["status"] for name, s in sections.items()} == dict.fromkeys(sections, "ok"), \
        {name: s["error"] for name, s in sections.items()}
    correctness = sections["correctness"]["result"]
    assert correctness["pass"] and correctness["details"]["resume_bitwise_equal"]
    train = [s["result"] for name, s in sections.items() if name.startswith("vit_")]
    assert all(r["captions_per_s"] > 0 and r["official_schedule_min"] > 0 for r in train)
    assert {r["path"] for r in train} == {"bf16", "reference", "compiled"}
    assert sections["vit_l14_reference"]["result"]["mean_tokens"] == 32  # lincir-world-vit's whole context
    assert sections["vit_l14_compiled"]["result"]["compile"] == "eager"
    assert sections["embed_vit_l14"]["result"]["images_per_s"] > 0
    assert [t["met"] is not None for t in report["targets"]] == [True] * len(gpu.TARGETS)
    table = (out / "gpu.md").read_text()
    assert table in stdout and all(f"| {name} | ok |" in table for name in sections if name != "correctness")
    print(f"dry run: {seconds:.1f} s")


def test_dry_run_report_has_exactly_the_keys_of_a_real_run(dry_run):
    out, _, _ = dry_run
    report = json.loads((out / "gpu.json").read_text())
    real = gpu.skeleton(gpu.plan(gpu.REAL, 790.0, 0), gpu.REAL, 420.0, 790.0, "NVIDIA H200")
    assert gpu.key_tree(report) == gpu.key_tree(json.loads(json.dumps(real)))
    assert report["dry_run"] is True and real["dry_run"] is False


def section(name: str, run, budget_s: float = 30.0) -> gpu.Section:
    return gpu.Section(name, budget_s, {"value": None}, run)


def test_a_failing_or_slow_section_is_recorded_and_the_next_one_runs():
    def fails():
        raise RuntimeError("CUDA out of memory")

    def slow():
        while True:
            time.sleep(0.05)

    def swallows_one_then_wraps():  # as a tracer that catches the first alarm and re-raises the next as its own
        try:
            time.sleep(10)
        except gpu.SectionTimeout:
            pass
        try:
            time.sleep(10)
        except gpu.SectionTimeout as e:
            raise RuntimeError("backend compiler failed") from e

    sections = [section("fails", fails), section("slow", slow, budget_s=0.3), section("wrong_keys", lambda: {"x": 1}),
                section("swallows", swallows_one_then_wraps, budget_s=0.3), section("works", lambda: {"value": 3})]
    report = {"sections": {s.name: {"status": "pending", "error": None, "seconds": None, "result": s.template}
                           for s in sections}}
    written = []
    def write(report):
        written.append({name: entry["status"] for name, entry in report["sections"].items()})

    gpu.run_sections(sections, report, 60.0, write, printer=lambda line: None)
    assert written[-1] == {"fails": "error", "slow": "timeout", "wrong_keys": "error", "swallows": "timeout",
                           "works": "ok"}
    assert [list(w.values()).count("pending") for w in written] == [4, 3, 2, 1, 0]  # written after every section
    assert report["sections"]["fails"]["error"] == "RuntimeError: CUDA out of memory"
    assert report["sections"]["slow"]["seconds"] < 2 and report["sections"]["swallows"]["seconds"] < 5
    assert report["sections"]["works"]["result"] == {"value": 3}


def test_sections_are_skipped_once_the_run_budget_is_spent():
    ran = []
    sections = [section("a", lambda: ran.append(1) or {"value": 1})]
    report = {"sections": {"a": {"status": "pending", "error": None, "seconds": None, "result": {"value": None}}}}
    gpu.run_sections(sections, report, gpu.MIN_SECTION_S - 1, lambda r: None, printer=lambda line: None)
    assert report["sections"]["a"]["status"] == "skipped" and not ran


def test_targets_take_the_faster_optimised_row_and_the_reference():
    def ok(**result):
        return {"status": "ok", "result": result}

    sections = {"vit_l14_bf16": ok(captions_per_s=100.0, official_schedule_min=6.0, peak_fraction=0.2),
                "vit_l14_compiled": ok(captions_per_s=200.0, official_schedule_min=3.0, peak_fraction=0.4),
                "vit_l14_reference": ok(captions_per_s=10.0),
                "vit_bigg14_bf16": {"status": "timeout", "result": {}}}
    rows = {t["target"]: t for t in gpu.targets(sections)}
    assert rows["ViT-L-14 official schedule (min)"] == {"target": "ViT-L-14 official schedule (min)", "goal": "<= 5",
                                                        "value": 3.0, "met": True, "from": "vit_l14_compiled"}
    assert rows["ViT-L-14 speed-up over the reference"]["value"] == 20.0
    assert rows["ViT-bigG-14 official schedule (min)"]["met"] is None


def test_help_explains_the_sections_and_the_device_command(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["perf", "gpu", "--help"])
    text = capsys.readouterr().out
    assert exit.value.code == 0
    assert all(name in text for name in ("correctness", "vit_l14_reference", "embed_vit_l14", "vit_bigg14_compiled"))
    assert "--target /tmp/site .whl/*.whl" in text


def test_the_carried_open_clip_is_the_projects_pin():
    pin = re.search(r'"open-clip-torch==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"open_clip_torch=={pin}" in (ROOT / "Makefile").read_text()


def test_carried_wheels_install_on_a_clean_path_for_the_gpu_machines_python(tmp_path):
    """`make wheels` fills .whl/ (network); where it has run, the device command's install must work."""
    wheels = sorted((ROOT / ".whl").glob("*.whl"))
    if not wheels:
        pytest.skip("no .whl/ here: run `make wheels`")
    for wheel in wheels:  # name-version-python-abi-platform.whl: runs on CPython 3.12, x86-64 Linux
        python, abi, platform = wheel.stem.split("-")[-3:]
        assert python in ("py3", "cp312") or (abi == "abi3" and int(python.removeprefix("cp3")) <= 12), wheel.name
        assert platform == "any" or ("manylinux" in platform and platform.endswith("x86_64")), wheel.name
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)], check=True)
    assert all((site / name / "__init__.py").is_file() for name in ("open_clip", "ftfy", "wcwidth"))
