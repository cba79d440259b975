"""The ablation grid: each group is a param and the values the paper compares, and what the tables
report. `lincir ablate` runs it (ablate.py); RESULTS.md reports it beside the paper's numbers
(results.py, where every paper number is)."""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    """One ablation: a param and the values the paper compares."""

    param: str
    values: tuple[str, ...]
    seed_params: tuple[str, ...] = ("train.seed",)
    fixed: tuple[tuple[str, str], ...] = ()  # other params every cell of the group sets
    table: str = ""  # the group whose table its rows join (RESULTS.md); "": its own table
    label: str = ""  # what its rows are in that table
    settings: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()  # a value that sets more than `param`

    def overrides(self, value: str) -> dict[str, str]:
        """The params a cell of `value` sets: `param` to it, or what `settings` names it."""
        return dict(dict(self.settings).get(value, ((self.param, value),)))


METHODS = ("lincir", "pic2word", "searle", "masked_inversion")
GROUPS = {
    "noise": Group("noise", ("unif_gaussian", "gaussian", "uniform", "none", "student_t", "exponential", "chi2")),
    # Tab. 8's rows: 1, 3 and 5 keyword tokens are n_keywords with masking.n 1, 3, 5
    "masking": Group("masking.strategy", ("all_keywords", "keywords_1", "keywords_3", "keywords_5", "random_token",
                                          "non_keywords", "nouns"), ("train.seed", "masking.seed"),
                     settings=tuple((f"keywords_{n}", (("masking.strategy", "n_keywords"), ("masking.n", str(n))))
                                    for n in (1, 3, 5))),
    "supervision": Group("lincir.supervision", ("smp", "photo_of", "image_latent")),
    # the methods twice: each with its authors' phi and optimiser, and every one with LinCIR's
    # (pipeline/training/recipe.py), so that the second pair of rows differs in supervision alone
    "method": Group("method", METHODS, fixed=(("train.recipe", "authors"),), label="as the authors built them"),
    "controlled": Group("method", METHODS, fixed=(("train.recipe", "controlled"),), table="method",
                        label="controlled: LinCIR's phi and optimiser"),
}
# What the tables report, (metrics file, benchmark, metric): the paper's CIRR R@1, and the two
# with signal on the world, where R@1 is 0-2 queries of 400 for every setting.
METRICS = [("metrics/evaluate/world_cirr.json", "world_cirr", "R@1"),
           ("metrics/evaluate/world_cirr.json", "world_cirr", "R@50"),
           ("metrics/evaluate/world_circo.json", "world_circo", "mAP@5")]
NAME = re.compile(r"(?P<group>[a-z]+)-(?P<value>[a-z0-9_]+)-s(?P<seed>\d+)")
