"""DVC stage `params`: every section of params.yaml checked before any other stage runs.

Every stage depends on its output, so `dvc repro` stops here on a bad value (a typo in a
registry name, `train.steps: 0`, a template without `$`) before any work. It also keeps
benchmark names that are unsafe in a command line or a path (`"; rm …`, `../..`) from
reaching the embed and evaluate stages, whose dvc.yaml commands contain the name. Each
stage checks its own sections again when run alone.

Writes data/params/checked, whose content never changes: a new check never re-runs others.
"""
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.backbone import BackboneConfig
from pipeline.benchmarks import check_benchmarks
from pipeline.core import stage
from pipeline.contrastive import WorldTraining
from pipeline.core.params import section, typed
from pipeline.gallery import EmbedConfig
from pipeline.geometry import GeometryConfig
from pipeline.keywords import KeywordsConfig
from pipeline.masking import check_params as check_masking
from pipeline.methods import METHODS
from pipeline.pairs import PairsConfig
from pipeline.retrieval import EvaluateConfig
from pipeline.tokens import TokensConfig
from pipeline.train import train_config
from pipeline.world import WorldConfig

OUT = Path("data/params/checked")
SECTIONS = {  # section -> its check; ingest's sources are checked by the ingest stage, which needs the files
    "world": lambda v: typed(WorldConfig, v, "world"),
    "backbone": lambda v: typed(WorldTraining, typed(BackboneConfig, v, "backbone").world_training,
                                "backbone.world_training"),
    "geometry": lambda v: typed(GeometryConfig, v, "geometry"),
    "keywords": lambda v: typed(KeywordsConfig, v, "keywords"),
    "masking": check_masking,
    "pairs": lambda v: typed(PairsConfig, v, "pairs"),
    "tokens": lambda v: typed(TokensConfig, v, "tokens"),
    "embed": lambda v: typed(EmbedConfig, v, "embed"),
    "evaluate": lambda v: typed(EvaluateConfig, v, "evaluate"),
}


def main(params: dict) -> None:
    check_benchmarks(params.get("benchmarks"))
    for name, check in SECTIONS.items():
        check(section(params, name))
    train_config(params)
    METHODS.get(params.get("method", "lincir"))
    for name in METHODS.names():  # every method's section, the unselected ones too: a typo waits for no one
        typed(METHODS.get(name).config, section(params, name), name)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("params.yaml passed every check\n")
    print("params: every section checked")


if __name__ == "__main__":
    stage.run(main)
