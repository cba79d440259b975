"""DVC stage `geometry`: the modality gap of the backbone and of the noise-augmented caption latents
of every noise kind (LinCIR Tab. 1), and the norm histogram of each noise beside ||z_c|| (Fig. B.2).

Reads the held-out image and caption latents the backbone stage wrote; the noise is added as in
phi training: z' = z_c + noise_scale * n, on unnormalised z_c (pipeline/model/noise.py).
"""
import torch

from pipeline.core import stage
from pipeline.core.io import write_json, write_text
from pipeline.core.params import typed, value
from pipeline.evaluation.geometry import GeometryConfig, noise_geometry, norm_histogram
from pipeline.model.noise import NOISE

PARAMS = ["geometry", "lincir.noise_scale"]


def main(params: dict, args) -> None:
    cfg = typed(GeometryConfig, params["geometry"], "geometry")
    scale = value(params, "lincir.noise_scale", float, low=0)
    latents = torch.load(args.latents)
    captions = latents["caption"]
    metrics, noise = noise_geometry(latents["image"], captions, NOISE, scale, cfg.seed)
    write_json(args.metrics, metrics)
    norms = {"caption_latent": captions.norm(dim=-1), **{k: n.norm(dim=-1) for k, n in noise.items()}}
    write_text(args.histogram, norm_histogram(norms, cfg.bins))
    print("modality gap vs image latents:", f"backbone {metrics['backbone']['modality_gap']:.3f};",
          ", ".join(f"{k} {v['modality_gap']:.3f}" for k, v in metrics["noise"].items()))


if __name__ == "__main__":
    stage.run(main, PARAMS, parser=stage.arguments(__doc__, latents="the backbone stage's heldout_latents.pt",
                                                   metrics="metrics file", histogram="norm histograms (CSV)"))
