import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from pipeline.evaluation.geometry import geometry
from pipeline.evaluation.metrics import matched_cosine, modality_gap, pairwise_cosine
from pipeline.model.noise import NOISE

REPO = Path(__file__).resolve().parents[1]


def cloud(axis: int, angle: float, dim: int = 8) -> torch.Tensor:
    """Unit vectors at `angle` from basis vector `axis`, in +-/+- pairs around it: centroid cos(angle) * e_axis."""
    rows = []
    for other in (axis + 1) % dim, (axis + 2) % dim:
        for sign in (1, -1):
            v = torch.zeros(dim)
            v[axis], v[other] = math.cos(angle), sign * math.sin(angle)
            rows.append(v)
    return torch.stack(rows)


def test_gap_is_the_distance_between_known_centroids():
    a, b = cloud(0, 0.3), cloud(4, 1.1)  # centroids cos(0.3) e0 and cos(1.1) e4, orthogonal
    assert modality_gap(a, b) == pytest.approx(math.hypot(math.cos(0.3), math.cos(1.1)), abs=1e-6)
    # raw latents: each row is l2-normalised first, so row norms do not matter
    scales = torch.tensor([[0.5], [3.0], [7.0], [0.1]])
    assert modality_gap(a * scales, b * 2) == pytest.approx(modality_gap(a, b), abs=1e-6)
    # the same cone shifted by a known offset along one axis
    c = cloud(0, 0.3)
    assert modality_gap(c, c) == pytest.approx(0, abs=1e-6)
    assert modality_gap(cloud(0, 0.3), cloud(0, 0.9)) == pytest.approx(math.cos(0.3) - math.cos(0.9), abs=1e-6)


def test_cosines_match_brute_force():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(50, 16, generator=gen) + 2  # a cone: every row leans towards (1, ..., 1)
    b = torch.randn(50, 16, generator=gen)
    na, nb = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    sim = na @ na.T
    assert pairwise_cosine(a) == pytest.approx(sim[~torch.eye(50, dtype=bool)].mean().item(), abs=1e-5)
    assert pairwise_cosine(a) > 0.5 and abs(pairwise_cosine(b)) < 0.1
    assert matched_cosine(a, b) == pytest.approx((na * nb).sum(1).mean().item(), abs=1e-6)
    assert matched_cosine(a, 3 * a) == pytest.approx(1, abs=1e-6)
    assert set(geometry(a, b)) == {"modality_gap", "matched_cosine", "image_image_cosine", "caption_caption_cosine"}


def test_geometry_stage_writes_gap_per_noise_kind_and_histograms(tmp_path, stage_cli):
    gen = torch.Generator().manual_seed(0)
    images, captions = torch.randn(64, 16, generator=gen) + 1, torch.randn(64, 16, generator=gen) - 1
    (tmp_path / "data/backbone").mkdir(parents=True)
    torch.save({"image": images, "caption": captions}, tmp_path / "data/backbone/heldout_latents.pt")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert stage_cli(tmp_path, "geometry")[0] == 0
    metrics = json.loads((tmp_path / "metrics/geometry.json").read_text())
    assert metrics["backbone"]["modality_gap"] == pytest.approx(modality_gap(images, captions), abs=1e-6)
    assert set(metrics["noise"]) == set(NOISE.names())
    assert metrics["noise"]["none"]["modality_gap"] == pytest.approx(metrics["backbone"]["modality_gap"], abs=1e-6)
    rows = (tmp_path / "plots/noise_norms.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert header == ["norm", "caption_latent", *NOISE.names()] and len(rows) == 1 + params["geometry"]["bins"]
    counts = [[int(x) for x in r.split(",")[1:]] for r in rows[1:]]
    assert all(sum(col) == 64 for col in zip(*counts))  # every latent in one bin, for every kind


def test_noise_norm_plot_draws_every_noise_kind():
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    plot = next(p["noise_norms"] for p in spec["plots"] if "noise_norms" in p)
    drawn = set(plot["y"]["plots/noise_norms.csv"])
    assert drawn == {"caption_latent", *NOISE.names()} - {"none"}  # none is a spike at 0


def test_the_noise_regime_on_constructed_latents():
    """E||n|| / E||z_c|| and the fraction of the gap that closes, on latents whose answer is known."""
    from pipeline.core.registry import Registry
    from pipeline.evaluation.geometry import noise_geometry

    kinds = Registry("noise")
    kinds.register("none")(lambda z, gen: torch.zeros_like(z))
    kinds.register("double")(lambda z, gen: z)  # n = z_c: twice the latent, the same direction
    kinds.register("toward_images")(lambda z, gen: 3 * torch.tensor([1.0, 0.0]) - z)  # lands on the images
    images = torch.tensor([[3.0, 0.0]] * 4)
    captions = torch.tensor([[0.0, 3.0], [0.0, 3.0], [0.0, 4.0], [0.0, 4.0]])
    metrics, _ = noise_geometry(images, captions, kinds, scale=1.0, seed=0)
    assert metrics["backbone"]["caption_latent_norm"] == pytest.approx(3.5)
    assert metrics["noise"]["none"]["norm_ratio"] == 0 and metrics["noise"]["none"]["gap_closed"] == 0
    assert metrics["noise"]["double"]["norm_ratio"] == pytest.approx(1.0)
    assert metrics["noise"]["double"]["gap_closed"] == pytest.approx(0, abs=1e-6)  # scaling moves no direction
    assert metrics["noise"]["toward_images"]["gap_closed"] == pytest.approx(1.0)
