"""DVC stage `world`: generates the synthetic world (params: world) into data/world/."""
from pathlib import Path
import shutil
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script by dvc

from pipeline.core import stage
from pipeline.core.params import section, typed
from pipeline.world import WorldConfig, generate

OUT = Path("data/world")


def main(params: dict) -> None:
    cfg = typed(WorldConfig, section(params, "world"), "world")
    shutil.rmtree(OUT, ignore_errors=True)  # a stage's outs are rebuilt whole
    counts = generate(cfg, OUT)
    stage.write_json(OUT / "counts.json", counts)
    print("world:", ", ".join(f"{k}={v}" for k, v in counts.items()))


if __name__ == "__main__":
    stage.run(main)
