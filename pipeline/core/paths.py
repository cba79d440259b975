"""Where the pipeline leaves what the `lincir` tools read by default. The stages themselves get
their paths from dvc.yaml's command lines."""
from pathlib import Path

BACKBONE = Path("data/backbone/backbone.json")  # the backbone stage's record of the frozen model
PHI = Path("data/train/phi.pt")  # the train stage's phi
