"""DVC stage `params`: every section of params.yaml checked before any other stage runs.

Every stage depends on its output, so `dvc repro` stops here on a bad value (a typo in a registry
name, `train.steps: 0`, a template without `$`) before any work. It also keeps benchmark names that
are unsafe in a command line or a path (`"; rm ...`, `../..`) from reaching the embed and evaluate
stages, whose dvc.yaml commands contain the name. Each stage checks its own sections again when run
alone. It reads params.yaml whole (a file dep, not `params:`), and its output never changes: a new
check never re-runs the others.
"""
from pipeline.core import stage
from pipeline.core.executor import ExecutorConfig
from pipeline.core.io import write_text
from pipeline.core.params import section, typed
from pipeline.data.keywords import KeywordsConfig
from pipeline.data.masking import check_params as check_masking
from pipeline.data.pairs import PairsConfig
from pipeline.data.tokens import TokensConfig
from pipeline.data.world import WorldConfig
from pipeline.evaluation.benchmarks import check_benchmarks, check_dev
from pipeline.evaluation.gallery import EmbedConfig
from pipeline.evaluation.geometry import GeometryConfig
from pipeline.evaluation.queries import EvaluateConfig
from pipeline.methods import METHODS, method_config
from pipeline.model.backbone import BackboneConfig
from pipeline.model.contrastive import WorldTraining
from pipeline.training.loop import train_config

PARAMS = None  # all of params.yaml
SECTIONS = {  # section -> its check; ingest's sources are checked by the ingest stage, which needs the files
    "world": lambda v: typed(WorldConfig, v, "world"),
    "backbone": lambda v: typed(WorldTraining, typed(BackboneConfig, v, "backbone").world_training,
                                "backbone.world_training"),
    "geometry": lambda v: typed(GeometryConfig, v, "geometry"),
    "executor": lambda v: typed(ExecutorConfig, v, "executor"),
    "keywords": lambda v: typed(KeywordsConfig, v, "keywords"),
    "masking": check_masking,
    "pairs": lambda v: typed(PairsConfig, v, "pairs"),
    "tokens": lambda v: typed(TokensConfig, v, "tokens"),
    "embed": lambda v: typed(EmbedConfig, v, "embed"),
    "evaluate": lambda v: typed(EvaluateConfig, v, "evaluate"),
}


def main(params: dict, args) -> None:
    check_benchmarks(params.get("benchmarks"))
    for name, check in SECTIONS.items():
        check(section(params, name))
    train = train_config(params)
    if train.validate_every:
        check_dev(params, train.validate_on, train.validate_metric)
    method_config(params)
    for name in METHODS.names():  # every method's section, the unselected ones too: a typo waits for no one
        method_config(params, name)
    write_text(args.out, "params.yaml passed every check\n")
    print("params: every section checked")


if __name__ == "__main__":
    stage.run(main, PARAMS, parser=stage.arguments(__doc__, out="the file that says so"))
