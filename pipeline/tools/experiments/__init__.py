"""`lincir ablate`: the paper's ablations as DVC experiments, and RESULTS.md from them."""
