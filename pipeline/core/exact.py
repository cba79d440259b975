"""The same float results, bit for bit, on x86-64 CPUs of every make (docs/reproducibility.md).

torch picks its CPU kernels by the CPU it runs on: ATen's vectorised kernels by instruction set
(AVX-512 where there is one), MKL's by CPU make, model and instruction set, oneDNN's by instruction
set; FAISS its distance kernels the same way; and a reduction split over threads adds in another
order with another thread count. On the development machine each of these knobs, moved off its
default, changed the world backbone's weights within ten steps, and under an emulated Intel CPU
MKL's default path gave other bits than on this AMD one, its COMPATIBLE path the same. So every
process of the project asks the four libraries for those paths before anything is computed
(`pin_environment`, called when pipeline/core/stage.py is imported, which every stage script does
first, and by the `lincir` command: torch and MKL read these variables at their first computation,
not at import, and FAISS is only imported by pipeline modules), and every stage computes on THREADS
threads (`pin_threads`, called by `stage.run`).

On a CPU without AVX2 nothing is pinned (forcing AVX2 there would stop torch with an illegal
instruction). A variable already set is kept. LINCIR_EXACT=0 pins nothing: each library then takes
the fastest path of its CPU and every core, and the results are no longer those of another machine.
"""
from __future__ import annotations

import os
import platform
import sys

THREADS = 2  # of every stage: a reduction's order, hence its last bits, depends on the thread count
ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own kernels: not the AVX-512 ones
    # MKL (matrix products, and exp/log through its vector library): the one code path it keeps the
    # same on Intel and AMD; its AVX2 path is Intel's only (elsewhere MKL takes its own choice)
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (convolutions)
    "FAISS_SIMD_LEVEL": "AVX2",  # FAISS's distance kernels (evaluation rankings)
}


def enabled() -> bool:
    return os.environ.get("LINCIR_EXACT", "1") != "0"


def has_avx2() -> bool:
    """Whether this CPU runs AVX2 and FMA (every x86-64 CPU sold since about 2015), read without torch."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        from numpy._core._multiarray_umath import __cpu_features__  # numpy's own runtime CPU check
    except ImportError:
        return False
    return bool(__cpu_features__.get("AVX2") and __cpu_features__.get("FMA3"))


def pin_environment() -> None:
    """Sets ENVIRONMENT (keeping what is already set), where enabled and the CPU has AVX2."""
    if enabled() and has_avx2():
        for name, value in ENVIRONMENT.items():
            os.environ.setdefault(name, value)


def pin_threads() -> None:
    """torch on THREADS threads, where enabled and torch is loaded (a stage that never imports torch
    computes no float tensor)."""
    if enabled() and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(THREADS)
