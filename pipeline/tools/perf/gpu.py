"""`lincir perf gpu`: the GPU path of phi training and gallery embedding, checked and timed in one call.

A session lent a GPU gets 15 minutes of device time in all, the machine's start included, so
everything is one prepared command that finishes in about 7 minutes. It runs sections in order of
value, each under its own time budget, and rewrites gpu.json and gpu.md under --out after every
section: a run cut short still returns what it measured, and a section that fails records its
error and the next one runs. Every model has random weights (nothing is downloaded; speed does not
depend on the weights) and only the tower a section needs is built.

The real run needs a CUDA GPU; `--dry-run` runs the same sections, code and report keys on the
CPU, with the world's tiny model standing in for every architecture and a few steps each
(tests/test_perf_gpu.py runs it, so the command cannot rot between GPU sessions).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.core.arguments import integer, number
from pipeline.tools.perf.common import machine
from pipeline.tools.perf.train import OFFICIAL_BATCH, OFFICIAL_STEPS, bf16_peak

HELP = "the GPU path in one call: bf16 correctness, phi training and embedding speed (gpu.json, gpu.md)"
DESCRIPTION = f"""{HELP}.

Sections, in this order (each under its own time budget, the whole run under --budget-s):
  correctness           ViT-L-14: SMP loss and phi's gradients of one batch under bf16 autocast
                        against fp32; truncation on and off; a run killed after its checkpoint and
                        resumed against an uninterrupted one (tolerances in gpu.json)
  vit_l14_bf16          phi training steps at batch {OFFICIAL_BATCH}: the optimised TrainConfig (bf16
                        autocast, fused AdamW, exact truncation, z_c cached, length buckets)
  vit_l14_reference     the authors' way (`lincir perf train`'s reference: all 77 tokens, z_c
                        encoded every step, fp16 autocast)
  vit_l14_compiled      the optimised TrainConfig with torch.compile (one untimed run compiles)
  embed_vit_l14         gallery embedding: the image tower alone on synthetic 224 px images, fp16
                        autocast as pipeline.evaluation.gallery
  vit_h14_bf16, vit_h14_reference, vit_bigg14_bf16, vit_bigg14_reference,
  vit_h14_compiled, vit_bigg14_compiled   the same for ViT-H-14 and ViT-bigG-14

A training row gives captions/s, steps/s, the text tower's TFLOP/s (counted analytically:
forward, and backward to the inputs) and its fraction of the bf16 dense peak (--peak-tflops;
the datasheet figure is recorded beside it), the projected time of the official schedule
({OFFICIAL_STEPS:,} steps x {OFFICIAL_BATCH}) with and without caching z_c of every caption, and
the peak GPU memory. gpu.json ends with the speed targets, each marked met or not (not asserted).

On the GPU machine (no registry there; `make wheels` here fills .whl/, carried with the call):
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 \\
      TQDM_DISABLE=1 && python3 -m pipeline.tools.perf gpu --out $OUT"""

MEASURED_PEAK = 790.0  # TFLOP/s: an 8192^3 bf16 matmul on this workplace's H200 (device notes, KINDS.md)
ARCHITECTURES = {"vit_l14": "ViT-L-14", "vit_h14": "ViT-H-14", "vit_bigg14": "ViT-bigG-14"}
STAND_IN = "lincir-world-vit"  # the dry run's model for every architecture
MIN_SECTION_S = 15  # a section starts only with this much of the run's budget left
GIB = 2 ** 30
SOT, EOT = 49406, 49407  # open_clip's BPE

# relative differences (L2 norm of the difference over the norm of the reference) a check accepts
TOLERANCES = {
    "bf16_vs_fp32_loss": 2e-2, "bf16_vs_fp32_grads": 5e-2,  # bf16 rounds to 8 bits, through every layer
    "truncation_fp32_loss": 1e-4, "truncation_fp32_grads": 1e-4,  # exact but for the kernels' summation order
    "truncation_bf16_loss": 2e-2, "truncation_bf16_grads": 5e-2,
    "resume_params": 1e-3, "resume_losses": 1e-3,  # the GPU's attention backward may sum in any order
}
RESUME_STEPS, RESUME_EVERY, RESUME_KILLED_AT = 6, 3, 4

TRAIN_KEYS = ("model", "text_tower", "path", "precision", "compile", "batch_size", "steps", "mean_tokens",
              "captions_per_s", "steps_per_s", "s_per_step", "TFLOP_per_s", "peak_fraction",
              "datasheet_peak_fraction", "official_schedule_min", "cache_captions_per_s",
              "official_schedule_with_cache_min", "first_pass_captions_per_s", "warm_run_s", "setup_s", "last_loss", "peak_memory_GiB")
EMBED_KEYS = ("model", "image_size", "precision", "batch_size", "batches", "images_per_s", "s_per_batch",
              "peak_memory_GiB")
DETAIL_KEYS = ("loss_fp32", "loss_bf16", "grad_cosine_bf16_fp32", "resume_bitwise_equal")
# (what, architecture, measure, goal, bound): values from the faster of the arch's bf16 and compiled rows
TARGETS = [("ViT-L-14 official schedule (min)", "vit_l14", "official_schedule_min", "<=", 5.0),
           ("ViT-L-14 fraction of the bf16 peak", "vit_l14", "peak_fraction", ">=", 0.25),
           ("ViT-bigG-14 official schedule (min)", "vit_bigg14", "official_schedule_min", "<=", 20.0),
           ("ViT-bigG-14 fraction of the bf16 peak", "vit_bigg14", "peak_fraction", ">=", 0.35),
           ("ViT-L-14 speed-up over the reference", "vit_l14", "speedup", ">=", 8.0),
           ("ViT-H-14 speed-up over the reference", "vit_h14", "speedup", ">=", 8.0),
           ("ViT-bigG-14 speed-up over the reference", "vit_bigg14", "speedup", ">=", 8.0)]


@dataclass(frozen=True)
class Sizes:
    device: str
    batch: int  # captions a training step
    steps: int  # timed training steps, after one warm-up step (on a GPU, after a whole untimed pass too)
    check_batch: int  # captions of the correctness checks
    embed_batch: int
    embed_batches: int  # timed, after two warm-up batches
    compile_backend: str
    stand_in: bool  # every architecture is STAND_IN


REAL = Sizes("cuda", OFFICIAL_BATCH, 20, 128, 256, 10, "inductor", False)
# torch.compile's "eager" backend traces like inductor but generates no code (minutes on a CPU)
DRY = Sizes("cpu", 8, 2, 8, 4, 2, "eager", True)


@dataclass
class Section:
    name: str
    budget_s: float  # model build, warm-up, compilation and timed work together
    template: dict  # the result's keys, the same in a dry run and a real one
    run: Callable[[], dict]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("gpu", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="on the CPU, lincir-world-vit for every model, a few steps: "
                   "the same sections and report keys (what the test suite runs)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "logs/perf_gpu"),
                   help="folder for gpu.json and gpu.md (default: $OUT when set, else logs/perf_gpu)")
    p.add_argument("--budget-s", type=number(0, above=True), default=420.0, help="wall seconds for all sections; one that would "
                   "start with less than 15 s left is skipped (default: 420)")
    p.add_argument("--sections", nargs="+", metavar="NAME", help="run only these sections (default: all)")
    p.add_argument("--peak-tflops", type=number(0, above=True), default=MEASURED_PEAK, help="bf16 dense peak for the fractions "
                   f"(default: {MEASURED_PEAK:g}, an H200's measured matmul rate; its datasheet says "
                   f"{bf16_peak('H200'):g})")
    p.add_argument("--seed", type=integer(0), default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    sizes = DRY if args.dry_run else REAL
    if sizes.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("lincir perf gpu: no CUDA device here (--dry-run runs the same sections on the CPU)")
    if sizes.device == "cpu":
        torch.set_num_threads(1)  # the tiny model gains nothing from threads, which a busy machine slows 10x
    sections = plan(sizes, args.peak_tflops, args.seed)
    if args.sections:
        unknown = sorted(set(args.sections) - {s.name for s in sections})
        if unknown:
            raise SystemExit(f"lincir perf gpu: unknown sections {unknown}; valid: {[s.name for s in sections]}")
        sections = [s for s in sections if s.name in args.sections]
    gpu = torch.cuda.get_device_name() if sizes.device == "cuda" else None
    report = skeleton(sections, sizes, args.budget_s, args.peak_tflops, gpu)
    start = time.monotonic()

    def write(report: dict) -> None:
        report["elapsed_s"] = round(time.monotonic() - start, 1)
        report["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
        report["targets"] = targets(report["sections"])
        save(report, args.out)

    run_sections(sections, report, args.budget_s, write)
    print(markdown(report))
    print(f"wrote {args.out / 'gpu.json'} and {args.out / 'gpu.md'}")
    return 0


def plan(sizes: Sizes, peak: float, seed: int) -> list[Section]:
    """The sections in order of value: correctness, ViT-L, embedding, the larger towers, and the
    compiled larger towers last (compiling ViT-bigG-14 can take minutes)."""
    def model(arch: str) -> str:
        return STAND_IN if sizes.stand_in else ARCHITECTURES[arch]

    def training(arch: str, path: str, budget_s: float) -> Section:
        return Section(f"{arch}_{path}", budget_s, dict.fromkeys(TRAIN_KEYS),
                       lambda: train_section(model(arch), path, sizes, peak, seed))

    return [Section("correctness", 90, correctness_template(), lambda: correctness(model("vit_l14"), sizes, seed)),
            training("vit_l14", "bf16", 45), training("vit_l14", "reference", 45),
            training("vit_l14", "compiled", 120),
            Section("embed_vit_l14", 45, dict.fromkeys(EMBED_KEYS),
                    lambda: embed_section(model("vit_l14"), sizes, seed)),
            training("vit_h14", "bf16", 45), training("vit_h14", "reference", 60),
            training("vit_bigg14", "bf16", 60), training("vit_bigg14", "reference", 90),
            training("vit_h14", "compiled", 120), training("vit_bigg14", "compiled", 150)]


# --- the sections ---------------------------------------------------------------------------------

def tower_on(model: str, device: str):
    """pipeline.tools.perf.train.build_tower with the random weights drawn on `device` directly
    (ViT-bigG-14's text tower has 0.7 billion of them)."""
    import torch

    from pipeline.tools.perf.train import build_tower

    with torch.device(device):
        return build_tower(model, device)


@contextmanager
def compile_backend(backend: str):
    """torch.compile with `backend` inside the block: pipeline.methods.lincir compiles with the default
    (inductor), and the dry run swaps in one that traces without generating code."""
    import torch

    if backend == "inductor":
        yield
        return
    default = torch.compile
    torch.compile = lambda *a, **kw: default(*a, **{**kw, "backend": backend})
    try:
        yield
    finally:
        torch.compile = default


def peak_memory_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / GIB if device == "cuda" else None


def train_section(model: str, path: str, sizes: Sizes, peak: float, seed: int) -> dict:
    """phi training steps of `path` (bf16, reference or compiled) with `lincir perf train`'s code."""
    import numpy as np
    import torch

    from pipeline.tools.perf import reference
    from pipeline.tools.perf.train import cache_seconds, timed_corpus, timed_train, timed_work
    from pipeline.training.batches import PRECISIONS
    from pipeline.training.loop import TrainConfig

    device = sizes.device
    torch.manual_seed(seed)
    tower, embed_dim, layers, width = tower_on(model, device)
    (ids, masked, lengths), _ = timed_corpus(tower, sizes.batch, sizes.steps, seed)
    cfg = TrainConfig(steps=sizes.steps + 1, batch_size=sizes.batch, seed=seed, checkpoint_every=10 ** 9,
                      log_every=sizes.steps + 1, compile=path == "compiled")
    if path == "reference":
        cfg = reference.train_config(cfg, device)
    with compile_backend(sizes.compile_backend) if cfg.compile else nullcontext():
        # a first run meets every shape the timed run meets, so the timed steps compile nothing and build
        # no kernel plan: the steady state of a long run, where each length bucket comes back again and again
        warm = timed_train(tower, embed_dim, ids, masked, lengths, cfg, device) \
            if cfg.compile or device == "cuda" else None
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        timed = timed_train(tower, embed_dim, ids, masked, lengths, cfg, device)
    memory = peak_memory_gib(device)
    seqs, work = timed_work(cfg, ids, lengths, (layers, width, embed_dim), sizes.steps)
    captions_per_s = sizes.steps * sizes.batch / timed["steps_s"]
    tflops = work / timed["steps_s"] / 1e12
    official = OFFICIAL_STEPS * OFFICIAL_BATCH
    schedule_min = official / captions_per_s / 60
    cache_per_s = len(ids) / cache_seconds(tower, ids, cfg, device) if cfg.cache_targets else None
    datasheet = bf16_peak("H200")
    return {"model": model, "text_tower": f"{layers} layers x width {width}", "path": path,
            "precision": next(k for k, v in PRECISIONS.items() if v == cfg.autocast_dtype(device)),
            "compile": sizes.compile_backend if cfg.compile else None, "batch_size": sizes.batch,
            "steps": sizes.steps, "mean_tokens": float(np.mean(seqs)), "captions_per_s": captions_per_s,
            "steps_per_s": sizes.steps / timed["steps_s"], "s_per_step": timed["steps_s"] / sizes.steps,
            "TFLOP_per_s": tflops, "peak_fraction": tflops / peak, "datasheet_peak_fraction": tflops / datasheet,
            "official_schedule_min": schedule_min, "cache_captions_per_s": cache_per_s,
            "official_schedule_with_cache_min": schedule_min + official / cache_per_s / 60 if cache_per_s else None,
            "first_pass_captions_per_s": sizes.steps * sizes.batch / warm["steps_s"] if warm else None,
            "warm_run_s": warm["total_s"] if warm else None, "setup_s": timed["setup_s"],
            "last_loss": timed["last_loss"], "peak_memory_GiB": memory}


def embed_section(model: str, sizes: Sizes, seed: int) -> dict:
    """Images/s of `model`'s image tower alone on synthetic preprocessed images (decoding is the
    DataLoader workers' job, measured by `lincir perf embed`), fp16 autocast on the GPU as
    pipeline.evaluation.gallery embeds. open_clip's private builder: open-clip-torch is pinned."""
    import open_clip
    import torch
    from open_clip.model import _build_vision_tower

    from pipeline.model.backbone import check_model_name

    device = sizes.device
    check_model_name(model)
    cfg = open_clip.get_model_config(model)
    torch.manual_seed(seed)
    with torch.device(device):
        visual = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], cfg.get("quick_gelu", False))
    visual = visual.eval().requires_grad_(False)
    size = cfg["vision_cfg"]["image_size"]
    gen = torch.Generator(device).manual_seed(seed)
    # two input sets in turn, so no batch is served from the cache the previous one warmed
    images = [torch.randn(sizes.embed_batch, 3, size, size, device=device, generator=gen) for _ in range(2)]
    dtype = torch.float16 if device == "cuda" else None
    with torch.no_grad(), torch.autocast(device, dtype=dtype, enabled=dtype is not None):
        for x in images:
            visual(x)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for i in range(sizes.embed_batches):
            latents = visual(images[i % 2])
        float(latents.float().norm())  # waits for the GPU
        seconds = time.perf_counter() - start
    n = sizes.embed_batch * sizes.embed_batches
    return {"model": model, "image_size": size, "precision": "fp16" if dtype else "fp32",
            "batch_size": sizes.embed_batch, "batches": sizes.embed_batches, "images_per_s": n / seconds,
            "s_per_batch": seconds / sizes.embed_batches, "peak_memory_GiB": peak_memory_gib(device)}


def correctness_template() -> dict:
    return {"model": None, "batch_size": None,
            "checks": {name: {"value": None, "tolerance": tol, "pass": None} for name, tol in TOLERANCES.items()},
            "details": dict.fromkeys(DETAIL_KEYS), "pass": None}


def relative(a, b) -> float:
    """||a - b|| / ||b||, in float64; NaN where either has a NaN (and NaN passes no check)."""
    import torch

    a, b = (torch.as_tensor(x).double().flatten().cpu() for x in (a, b))
    return float((a - b).norm() / b.norm())


def loss_and_grads(tower, phi, ids, masked, cfg, device: str, seed: int):
    """One batch's SMP loss and phi's gradient (flat), z_c included, at cfg's precision and truncation."""
    import torch

    from pipeline.methods.lincir import LincirConfig, smp_loss
    from pipeline.model.text_encoder import encode

    dtype = cfg.autocast_dtype(device)
    phi.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
        with torch.no_grad():
            z_c = encode(tower, ids, truncate=cfg.truncate).float()
        loss = smp_loss(tower, phi, masked, z_c, LincirConfig(), torch.Generator(device).manual_seed(seed), cfg.truncate)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in phi.parameters()])


class Killed(Exception):
    """Stops a training run from its log callback, as a kill would, after its checkpoint."""


def resumed_vs_straight(tower, embed_dim: int, ids, masked, cfg, device: str):
    """phi's parameters and logged losses of an uninterrupted run and of one killed after its
    checkpoint and resumed: (straight params, resumed params, straight losses, resumed losses)."""
    import torch

    from pipeline.methods.lincir import train_phi

    def params(phi):
        return torch.cat([p.detach().flatten() for p in phi.parameters()])

    def killer(step, values):
        if step == RESUME_KILLED_AT:
            raise Killed

    straight, resumed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        a = train_phi(tower, embed_dim, ids, masked, cfg, device=device, checkpoint=Path(tmp) / "a.pt",
                      log=lambda step, values: straight.append(values["loss"]))
        try:
            train_phi(tower, embed_dim, ids, masked, cfg, device=device, checkpoint=Path(tmp) / "b.pt", log=killer)
        except Killed:
            pass
        b = train_phi(tower, embed_dim, ids, masked, cfg, device=device, checkpoint=Path(tmp) / "b.pt",
                      log=lambda step, values: resumed.append(values["loss"]))
    return params(a), params(b), straight, resumed


def correctness(model: str, sizes: Sizes, seed: int) -> dict:
    """bf16 autocast against fp32, truncation on against off (both precisions), and a resumed run
    against an uninterrupted one (at the training precision), on one model's random-weight tower."""
    import numpy as np
    import torch

    from pipeline.tools.perf.synthetic import token_arrays
    from pipeline.training.loop import TrainConfig, new_phi

    device, batch = sizes.device, sizes.check_batch
    torch.manual_seed(seed)
    tower, embed_dim, _, _ = tower_on(model, device)
    context = tower.module.positional_embedding.shape[0]
    ids, masked, _ = token_arrays(4 * batch, SOT, EOT, tower.placeholder_id, seed=seed, context_length=context)
    first = [torch.from_numpy(a[:batch].astype(np.int64)).to(device) for a in (ids, masked)]
    # dropout off: on the GPU its masks are drawn differently for bf16 and fp32 tensors
    base = TrainConfig(batch_size=batch, seed=seed, dropout=0.0)
    phi = new_phi(tower, embed_dim, base, device)
    runs = {(precision, truncate): loss_and_grads(tower, phi, *first, replace(base, precision=precision,
                                                                              truncate=truncate), device, seed)
            for precision in ("fp32", "bf16") for truncate in (True, False)}
    values = {"bf16_vs_fp32_loss": relative(runs["bf16", True][0], runs["fp32", True][0]),
              "bf16_vs_fp32_grads": relative(runs["bf16", True][1], runs["fp32", True][1])}
    for precision in ("fp32", "bf16"):
        on, off = runs[precision, True], runs[precision, False]
        values[f"truncation_{precision}_loss"] = relative(on[0], off[0])
        values[f"truncation_{precision}_grads"] = relative(on[1], off[1])
    resume = TrainConfig(steps=RESUME_STEPS, batch_size=batch, seed=seed, checkpoint_every=RESUME_EVERY,
                         log_every=1)
    straight, resumed, straight_losses, resumed_losses = resumed_vs_straight(tower, embed_dim, ids, masked,
                                                                            resume, device)
    values["resume_params"] = relative(resumed, straight)
    values["resume_losses"] = relative(resumed_losses, straight_losses)
    checks = {name: {"value": value, "tolerance": TOLERANCES[name], "pass": bool(value <= TOLERANCES[name])}
              for name, value in values.items()}
    bf16, fp32 = runs["bf16", True][1].double(), runs["fp32", True][1].double()
    details = {"loss_fp32": float(runs["fp32", True][0]), "loss_bf16": float(runs["bf16", True][0]),
               "grad_cosine_bf16_fp32": float(bf16 @ fp32 / (bf16.norm() * fp32.norm())),
               "resume_bitwise_equal": bool(torch.equal(resumed, straight))}
    return {"model": model, "batch_size": batch, "checks": checks, "details": details,
            "pass": all(c["pass"] for c in checks.values())}


# --- running the sections under their budgets -----------------------------------------------------

class SectionTimeout(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    """Raises SectionTimeout in the block after `seconds`, and again every 2 s until the block ends:
    code that catches every exception (torch.compile's tracer may) cannot swallow it for good.
    SIGALRM runs between Python bytecodes, so a long CUDA call finishes first; only in the main
    thread, elsewhere there is no limit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise SectionTimeout(f"stopped at its budget of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 2.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def timed_out(error: BaseException | None) -> SectionTimeout | None:
    """The SectionTimeout behind `error`, also where a library re-raised it as its own error."""
    while error is not None and not isinstance(error, SectionTimeout):
        error = error.__cause__ or error.__context__
    return error


def key_tree(value):
    """The keys of nested dicts (and of the dicts in lists), values left out: the report's shape."""
    if isinstance(value, dict):
        return {k: key_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [key_tree(v) for v in value]
    return None


def release(failed: bool) -> None:
    """Frees what a section held on the GPU. Compiled code is dropped only after a failure: it holds
    no weights (they are graph inputs), and keeping it spares the next compiled section a cold start."""
    import torch

    gc.collect()
    if failed and "torch._dynamo" in sys.modules:
        torch.compiler.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_sections(sections: list[Section], report: dict, budget_s: float, write: Callable[[dict], None],
                 printer=print) -> None:
    """Runs each section under min(its budget, what is left of the run's); writes the report after each."""
    deadline = time.monotonic() + budget_s
    for section in sections:
        entry = report["sections"][section.name]
        left = deadline - time.monotonic()
        if left < MIN_SECTION_S:
            entry.update(status="skipped", error=f"less than {MIN_SECTION_S} s of the run's {budget_s:.0f} s left")
        else:
            start = time.monotonic()
            try:
                with time_limit(min(section.budget_s, left)):
                    result = section.run()
                if key_tree(result) != key_tree(section.template):
                    raise ValueError(f"result keys {sorted(result)} differ from the report's "
                                     f"{sorted(section.template)}")
                entry.update(status="ok", result=result)
            except Exception as e:  # noqa: BLE001  (a failed section must not stop the ones after it)
                timeout = timed_out(e)
                entry.update(status="timeout" if timeout else "error",
                             error=str(timeout) if timeout else f"{type(e).__name__}: {e}"[:2000])
            entry["seconds"] = round(time.monotonic() - start, 1)
            release(entry["status"] != "ok")
        write(report)
        printer(f"lincir perf gpu: {section.name}: {entry['status']}"
                + (f" ({entry['seconds']} s)" if entry["seconds"] is not None else "")
                + (f": {entry['error']}" if entry["error"] else ""))
        sys.stdout.flush()


# --- the report ------------------------------------------------------------------------------------

def skeleton(sections: list[Section], sizes: Sizes, budget_s: float, peak: float, gpu: str | None) -> dict:
    """The report before any section ran: every key a finished run has, values None."""
    import open_clip
    import torch

    return {"command": "lincir perf gpu", "dry_run": sizes.stand_in, "device": sizes.device,
            "machine": {**machine("cpu"), "gpu": gpu, "python": sys.version.split()[0], "torch": torch.__version__,
                        "cuda": torch.version.cuda, "open_clip": open_clip.__version__},
            "peak_TFLOP_per_s": {"used": peak, "measured_H200_matmul": MEASURED_PEAK,
                                 "datasheet_H200": bf16_peak("H200")},
            "batch_size": sizes.batch, "timed_steps": sizes.steps, "budget_s": budget_s, "elapsed_s": None,
            "sections": {s.name: {"status": "pending", "error": None, "seconds": None, "budget_s": s.budget_s,
                                  "result": s.template} for s in sections},
            "targets": targets({})}


def best_row(sections: dict, arch: str) -> tuple[str | None, dict | None]:
    """The faster finished optimised row of an architecture (bf16 or compiled), with its section name."""
    done = [(name, sections[name]["result"]) for name in (f"{arch}_bf16", f"{arch}_compiled")
            if sections.get(name, {}).get("status") == "ok"]
    return max(done, key=lambda item: item[1]["captions_per_s"], default=(None, None))


def targets(sections: dict) -> list[dict]:
    out = []
    for what, arch, measure, goal, bound in TARGETS:
        name, row = best_row(sections, arch)
        value, source = None, name
        if row and measure == "speedup":
            ref = sections.get(f"{arch}_reference", {})
            if ref.get("status") == "ok":
                value = row["captions_per_s"] / ref["result"]["captions_per_s"]
                source = f"{name} / {arch}_reference"
        elif row:
            value = row[measure]
        met = None if value is None else (value <= bound if goal == "<=" else value >= bound)
        out.append({"target": what, "goal": f"{goal} {bound:g}", "value": value, "met": met, "from": source})
    return out


def save(report: dict, out: Path) -> None:
    """gpu.json and gpu.md, each replaced whole (a run killed while writing leaves the previous one)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("gpu.json", json.dumps(report, indent=1) + "\n"), ("gpu.md", markdown(report))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def cell(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def markdown(report: dict) -> str:
    m, peak = report["machine"], report["peak_TFLOP_per_s"]
    sections = report["sections"]
    title = "# lincir perf gpu" + (" --dry-run (CPU, lincir-world-vit for every model)" if report["dry_run"] else "")
    setting = (f"{m['gpu'] or m['cpu']}; torch {m['torch']}, CUDA {m['cuda']}, open_clip {m['open_clip']}, "
               f"Python {m['python']}. Fractions of a bf16 dense peak of {peak['used']:g} TFLOP/s (H200 measured "
               f"matmul {peak['measured_H200_matmul']:g}, datasheet {peak['datasheet_H200']:g}). "
               f"{report['elapsed_s']} s of a {report['budget_s']:g} s budget.")
    lines = [title, "", setting, "",
             f"## phi training (batch {report['batch_size']}, {report['timed_steps']} timed steps after a warm-up)", ""]
    train = [(name, s) for name, s in sections.items() if "captions_per_s" in s["result"]]
    lines += table(["section", "status", "model", "precision", "compile", "captions/s", "steps/s", "mean tokens",
                    "TFLOP/s", "of peak", "schedule min", "+ z_c cache min", "peak GiB", "s"],
                   [[name, s["status"], *(s["result"][k] for k in (
                       "model", "precision", "compile", "captions_per_s", "steps_per_s", "mean_tokens", "TFLOP_per_s",
                       "peak_fraction", "official_schedule_min", "official_schedule_with_cache_min",
                       "peak_memory_GiB")), s["seconds"]] for name, s in train])
    lines += ["", "## Gallery embedding (image tower alone, synthetic images)", ""]
    embed = [(name, s) for name, s in sections.items() if "images_per_s" in s["result"]]
    lines += table(["section", "status", "model", "px", "precision", "batch", "images/s", "peak GiB", "s"],
                   [[name, s["status"], *(s["result"][k] for k in ("model", "image_size", "precision", "batch_size",
                                                                   "images_per_s", "peak_memory_GiB")), s["seconds"]]
                    for name, s in embed])
    if "correctness" in sections:
        c = sections["correctness"]
        r = c["result"]
        heading = f"## Correctness ({c['status']}; {r['model']}, batch {r['batch_size']}): all pass: {cell(r['pass'])}"
        lines += ["", heading, ""]
        lines += table(["check (relative difference)", "value", "tolerance", "pass"],
                       [[name, v["value"], v["tolerance"], v["pass"]] for name, v in r["checks"].items()])
        lines += ["", ", ".join(f"{k} {cell(v, 6)}" for k, v in r["details"].items())]
    lines += ["", "## Targets (reported, not asserted)", ""]
    lines += table(["target", "goal", "value", "met", "from"],
                   [[t["target"], t["goal"], t["value"], t["met"], t["from"]] for t in report["targets"]])
    problems = [f"- {name}: {s['status']}: {s['error']}" for name, s in sections.items() if s["error"]]
    if problems:
        lines += ["", "## Sections that did not finish", "", *problems]
    return "\n".join(lines) + "\n"
