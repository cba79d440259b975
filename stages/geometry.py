"""DVC stage `geometry`: the modality gap of the backbone and of the noise-augmented caption
latents of every noise kind (LinCIR Tab. 1), and the norm histogram of each noise (Fig. B.2).

Reads the held-out image and caption latents the backbone stage wrote; the noise is added
as in phi training: z' = z_c + noise_scale * n, on unnormalised z_c (pipeline/noise.py).
"""
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from pipeline.core import stage
from pipeline.core.params import section, typed
from pipeline.geometry import GeometryConfig, NoiseScale, geometry, matched_cosine, modality_gap
from pipeline.noise import NOISE

LATENTS = Path("data/backbone/heldout_latents.pt")
HISTOGRAM = Path("plots/noise_norms.csv")


def main(params: dict) -> None:
    cfg = typed(GeometryConfig, section(params, "geometry"), "geometry")
    scale = typed(NoiseScale, {"noise_scale": section(params, "train").get("noise_scale", 1.0)}, "train").noise_scale
    latents = torch.load(LATENTS)
    images, captions = latents["image"], latents["caption"]
    gen = torch.Generator().manual_seed(cfg.seed)
    noise = {kind: scale * NOISE.get(kind)(captions, gen) for kind in NOISE.names()}
    metrics = {"backbone": geometry(images, captions),
               "noise": {kind: {"modality_gap": modality_gap(images, captions + n),
                                "matched_cosine": matched_cosine(images, captions + n)} for kind, n in noise.items()}}
    stage.write_json(Path("metrics/geometry.json"), metrics)

    # one histogram of ||scale * n|| per kind on shared bins, beside ||z_c|| for scale; the bins end at
    # the 99th percentile of all norms (heavy tails would squash the rest) and the last bin holds the tail
    norms = {"caption_latent": captions.norm(dim=-1), **{k: n.norm(dim=-1) for k, n in noise.items()}}
    top = np.percentile(torch.cat(list(norms.values())).numpy(), 99)
    edges = np.linspace(0, top, cfg.bins + 1)
    counts = {k: np.histogram(np.minimum(v.numpy(), top), bins=edges)[0] for k, v in norms.items()}
    HISTOGRAM.parent.mkdir(parents=True, exist_ok=True)
    rows = [",".join(["norm", *counts])]
    rows += [",".join([f"{(lo + hi) / 2:.4f}", *(str(c[i]) for c in counts.values())])
             for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))]
    HISTOGRAM.write_text("\n".join(rows) + "\n")
    print("modality gap vs image latents:", f"backbone {metrics['backbone']['modality_gap']:.3f};",
          ", ".join(f"{k} {v['modality_gap']:.3f}" for k, v in metrics["noise"].items()))


if __name__ == "__main__":
    stage.run(main)
