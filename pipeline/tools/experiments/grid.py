"""The ablation grid: each group is a param, the values the paper compares and its table there,
and what the tables report. `lincir ablate` runs it (ablate.py); RESULTS.md reports it (results.py)."""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    """One ablation: a param, the values the paper compares, and its table in the paper."""

    param: str
    values: tuple[str, ...]
    paper: str  # where the paper's numbers are
    seed_params: tuple[str, ...] = ("train.seed",)
    paper_metric: str = "CIRR dev R@1"  # what the paper's numbers are (pipeline/tools/experiments/results.py PAPER)


GROUPS = {
    "noise": Group("noise", ("unif_gaussian", "gaussian", "uniform", "none", "student_t", "exponential", "chi2"),
                   "Tab. 9"),
    "masking": Group("masking.strategy", ("all_keywords", "n_keywords", "random_token", "non_keywords", "nouns"),
                     "Tab. 8", ("train.seed", "masking.seed")),
    "supervision": Group("lincir.supervision", ("smp", "photo_of", "image_latent"), "Tab. 7"),
    "method": Group("method", ("lincir", "pic2word", "searle", "masked_inversion"), "each method's paper",
                    paper_metric="CIRR test R@1, ViT-L/14"),
}
# What the tables report, (metrics file, benchmark, metric): the paper's CIRR R@1, and the two
# with signal on the world, where R@1 is 0-2 queries of 400 for every setting.
METRICS = [("metrics/evaluate/world_cirr.json", "world_cirr", "R@1"),
           ("metrics/evaluate/world_cirr.json", "world_cirr", "R@50"),
           ("metrics/evaluate/world_circo.json", "world_circo", "mAP@5")]
NAME = re.compile(r"(?P<group>[a-z]+)-(?P<value>[a-z0-9_]+)-s(?P<seed>\d+)")
