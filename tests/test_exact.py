"""What must be exact across x86-64 CPUs (pipeline/core/exact.py, docs/reproducibility.md): the pinned
environment reaches a fresh process before torch computes anything, stages run on exact.THREADS
threads, and the float kernels the pipeline's float stages run give the recorded bits.

The recorded digests were computed on the development machine (AMD EPYC, Zen 3, AVX2, no AVX-512)
with torch 2.14.1 and faiss-cpu 1.15.1; with the environment pinned, any x86-64 CPU with AVX2 must
give them too. Another torch or FAISS version may change them (their kernels change): the test
says so instead of failing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core import exact

REPO = Path(__file__).resolve().parents[1]
PINNED = sorted(exact.ENVIRONMENT)
VERSIONS = {"torch": "2.14.1", "faiss": "1.15.1"}

# each float path of the float stages: backbone (CLIP training), geometry, pairs/embed (image tower),
# train (text tower, SMP loss, AdamW), evaluate (FAISS inner-product search, numpy-free)
DIGESTS = {
    "matmul": "a138bfe34ab4f5e9",
    "conv_patch_embedding": "9ed39001c9c89b87",
    "layer_norm": "78510b32868d42df",
    "softmax": "c727cb4224f34da9",
    "causal_attention": "1f37426d1acc0e0a",
    "gelu": "cf92529a6218f21c",
    "sum_reduction": "c3a278ce79f3be3d",
    "clip_training_3_steps": "ac8f02f9268bfbf9",
    "image_latents": "29f52cdcca053fbd",
    "text_latents": "29ed5f5f88be5fae",
    "faiss_search": "7b4d397c025d0f48",
}

PROBE = r"""
import hashlib, json, sys
import torch
from pipeline.core import stage  # pins the environment, as every stage script's first project import does
from pipeline.core import exact
exact.pin_threads()
import faiss
from open_clip.loss import ClipLoss
from pipeline.model import backbone as backbones
from pipeline.model.contrastive import train_clip

def digest(*tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]

g = torch.Generator().manual_seed(0)
r = lambda *shape: torch.randn(*shape, generator=g)
out = {}
out["matmul"] = digest(r(128, 192) @ r(192, 768))
out["conv_patch_embedding"] = digest(torch.nn.functional.conv2d(r(64, 3, 64, 64), r(192, 3, 16, 16), stride=16))
out["layer_norm"] = digest(torch.nn.functional.layer_norm(r(128, 32, 128), (128,)))
out["softmax"] = digest(torch.softmax(r(128, 4, 32, 32), -1))
q, k, v = r(128, 4, 32, 32), r(128, 4, 32, 32), r(128, 4, 32, 32)
out["causal_attention"] = digest(torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
out["gelu"] = digest(torch.nn.functional.gelu(r(128, 32, 512)))
out["sum_reduction"] = digest(r(1000, 1000).sum(0), r(1_000_000).sum())

torch.manual_seed(0)
model = backbones.create("lincir-world", None)
images = torch.rand(96, 3, 64, 64, generator=g)
tokens = torch.randint(1, 49000, (96, 2, 32), generator=g)
train_clip(model.model, images, tokens, steps=3, batch_size=32, lr=1e-3, weight_decay=0.1, seed=0,
           tokenizer=model.tokenizer)
out["clip_training_3_steps"] = digest(*model.model.parameters())
with torch.no_grad():
    image_latents = model.model.encode_image(images)
    text_latents = model.model.encode_text(tokens[:, 0])
out["image_latents"] = digest(image_latents)
out["text_latents"] = digest(text_latents)
index = faiss.IndexFlatIP(image_latents.shape[1])
index.add(image_latents.numpy())
scores, ids = index.search(text_latents.numpy(), 20)
out["faiss_search"] = hashlib.sha256(scores.tobytes() + ids.tobytes()).hexdigest()[:16]
import os
print(json.dumps({"digests": out, "threads": torch.get_num_threads(), "capability": torch.backends.cpu.get_cpu_capability(),
                  "environment": {k: os.environ.get(k) for k in exact.ENVIRONMENT},
                  "torch": torch.__version__.split("+")[0], "faiss": faiss.__version__}))
"""


@pytest.fixture(scope="module")
def probe():
    """PROBE in a new interpreter with none of the pinned variables set: as a stage starts."""
    clean = {k: v for k, v in os.environ.items() if k not in (*PINNED, "LINCIR_EXACT")}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env={**clean, "TQDM_DISABLE": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


needs_avx2 = pytest.mark.skipif(not exact.has_avx2(), reason="pinning needs an x86-64 CPU with AVX2")


@needs_avx2
def test_importing_pipeline_pins_torch_before_its_first_computation(probe):
    assert probe["environment"] == exact.ENVIRONMENT and probe["capability"] == "AVX2"


def test_what_a_user_set_is_kept_and_lincir_exact_0_pins_nothing(monkeypatch):
    monkeypatch.delenv("LINCIR_EXACT", raising=False)
    for name in PINNED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    exact.pin_environment()
    expected = {**exact.ENVIRONMENT, "MKL_CBWR": "COMPATIBLE"} if exact.has_avx2() else {"MKL_CBWR": "COMPATIBLE"}
    assert {k: os.environ[k] for k in PINNED if k in os.environ} == expected
    for name in PINNED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LINCIR_EXACT", "0")
    exact.pin_environment()
    assert not any(name in os.environ for name in PINNED)


def test_a_stage_computes_on_the_pinned_thread_count(tmp_path, monkeypatch):
    import torch

    from pipeline.core import stage

    (tmp_path / "params.yaml").write_text("x: 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stage"])
    before, seen = torch.get_num_threads(), []
    try:
        for env, threads in (("1", exact.THREADS), ("0", 1)):
            monkeypatch.setenv("LINCIR_EXACT", env)
            torch.set_num_threads(1)
            with pytest.raises(SystemExit) as done:
                stage.run(lambda params, args: seen.append(torch.get_num_threads()), [])
            assert done.value.code == 0 and seen[-1] == threads
    finally:
        torch.set_num_threads(before)


@needs_avx2
def test_the_float_kernels_give_the_recorded_bits(probe):
    assert probe["threads"] == exact.THREADS
    versions = {name: probe[name] for name in VERSIONS}
    if versions != VERSIONS:
        pytest.skip(f"digests recorded with {VERSIONS}, this is {versions}: record them again (docs/reproducibility.md)")
    differ = {k: v for k, v in probe["digests"].items() if DIGESTS[k] != v}
    assert not differ, (f"on this CPU these float paths give other bits than on the development machine: {differ} "
                        "(docs/reproducibility.md says what that means)")
