"""The centroid / residual decomposition of held-out latents (docs/world_backbone.md, "Why the matched
cosine does not follow"): each l2-normalised latent is its modality's centroid plus a residual,
x = mu_i + u, y = mu_t + v, and the mean matched cosine is mu_i . mu_t + E[u . v].

  python docs/world_backbone/decompose.py LATENTS

LATENTS: a file in the backbone stage's heldout_latents.pt format (also what study.py --latents writes).
"""
import argparse
from pathlib import Path

import torch

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("latents", type=Path)
latents = torch.load(p.parse_args().latents)
x, y = (torch.nn.functional.normalize(latents[k].double(), dim=-1) for k in ("image", "caption"))
mu_i, mu_t = x.mean(0), y.mean(0)
u, v = x - mu_i, y - mu_t
print(f"matched {(x * y).sum(1).mean():.3f}  |mu_i| {mu_i.norm():.3f}  |mu_t| {mu_t.norm():.3f}  "
      f"cos(mu_i, mu_t) {torch.cosine_similarity(mu_i, mu_t, dim=0):.3f}  mu_i.mu_t {mu_i @ mu_t:.3f}  "
      f"E[u.v] {(u * v).sum(1).mean():.3f}  residual variance {(u * u).sum(1).mean():.3f} / {(v * v).sum(1).mean():.3f}")
