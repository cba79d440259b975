"""Every param checked before any work: wrong types, ranges, registry names, templates and
benchmark names are one message naming the param, never a traceback or a silent wrong run."""
import errno
from pathlib import Path

import pytest
import yaml

from pipeline.core.errors import PipelineError, one_line, quoted
from pipeline.core.params import typed
from pipeline.data.keywords import KeywordsConfig
from pipeline.data.masking import check_params as check_masking
from pipeline.evaluation.benchmarks import check_benchmarks
from pipeline.evaluation.gallery import EmbedConfig
from pipeline.evaluation.queries import EvaluateConfig, check_template

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("template", ["a photo of that {}", "a photo of $", "{} {}", "a photo of $ $ that {}",
                                      "a photo of $ that {0} {1}", "a photo of $ that {name}", "a photo of $ {"])
def test_a_template_needs_one_placeholder_and_one_condition(template):
    with pytest.raises(PipelineError, match="evaluate.template must hold exactly one"):
        check_template(template)


def test_the_paper_template_passes():
    check_template("a photo of $ that {}")
    assert typed(EvaluateConfig, {"template": "$ but {}", "queries": ["trained_phi", "text_only"]}, "evaluate",
                 complete=False).queries


@pytest.mark.parametrize("section,cls,values,message", [
    ("embed", EmbedConfig, {"index": "hnws"}, "unknown faiss index type 'hnws'"),
    ("embed", EmbedConfig, {"batch_size": 0}, "embed.batch_size must be at least 1"),
    ("evaluate", EvaluateConfig, {"queries": ["trained_phi", "pic2wrd"]}, "unknown query 'pic2wrd'"),
    ("evaluate", EvaluateConfig, {"queries": "trained_phi"}, "evaluate.queries must be a list"),
    ("keywords", KeywordsConfig, {"pos": ["NOUN", "ADJECTIVE"]}, "not universal POS tags"),
    ("keywords", KeywordsConfig, {"n_process": 0}, "keywords.n_process must be a positive integer or 'auto'"),
    ("keywords", KeywordsConfig, {"batch_size": 1.5}, "keywords.batch_size must be an integer"),
])
def test_bad_section_values_name_the_param(section, cls, values, message):
    with pytest.raises(PipelineError, match=message):
        typed(cls, values, section, complete=False)


def test_masking_params_are_typed():
    with pytest.raises(PipelineError, match="masking.seed must be an integer"):
        check_masking({"strategy": "all_keywords", "seed": "x"})
    with pytest.raises(PipelineError, match="unknown key masking.stratgy"):
        check_masking({"stratgy": "nouns"})


@pytest.mark.parametrize("name", ['x"; touch pwned; "', "../../outside", "a/b", ".hidden", "", "a b", "é"])
def test_unsafe_benchmark_names_are_refused(name):
    entry = {"kind": "circo", "root": "data/world/benchmarks/circo", "split": "val"}
    with pytest.raises(PipelineError, match="is not allowed"):
        check_benchmarks({name: entry})
    assert check_benchmarks({"my-CIRCO_2": entry})["my-CIRCO_2"].kind == "circo"


def test_a_benchmark_entry_is_checked():
    with pytest.raises(PipelineError, match="unknown benchmark 'cirrr'"):
        check_benchmarks({"b": {"kind": "cirrr", "root": "x", "split": "val"}})
    with pytest.raises(PipelineError, match="unknown key benchmarks.b.spilt"):
        check_benchmarks({"b": {"kind": "cirr", "root": "x", "spilt": "val"}})


def test_quoted_caps_a_huge_value():
    assert len(quoted("x" * 10_000_000)) < 120


def test_the_params_stage_accepts_the_default_and_refuses_a_bad_value(tmp_path, stage_cli):
    params = yaml.safe_load((REPO / "params.yaml").read_text())

    def run(p):
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
        return stage_cli(tmp_path, "params")

    code, err = run(params)
    assert code == 0, err
    assert (tmp_path / "data/params/checked").is_file()
    params["evaluate"]["template"] = "{} {}"
    code, err = run(params)
    assert code == 1 and err.startswith("error: params.yaml: evaluate.template")
    assert "Traceback" not in err
    del params["train"]["lr"]  # every knob is in params.yaml: none falls back to a default in the code
    params["evaluate"]["template"] = "a photo of $ that {}"
    code, err = run(params)
    assert code == 1 and "train.lr is missing" in err


@pytest.mark.parametrize("change, message", [
    ({"method": ["lincir"]}, "a method is one name (lincir, masked_inversion, pic2word, searle), not ['lincir']"),
    ({"train.validate_on": "world_dvv"}, "train.validate_on 'world_dvv' is not an entry of benchmarks "
                                         "(world_circo, world_cirr, world_dev)"),
    ({"train.validate_metric": "R@500"}, "train.validate_metric 'R@500' is not a metric of world_dev (cirr); "
                                         "valid: R@1, R@5, R@10, R@50, subset_R@1"),
    ({"train.validate_metric": "mAP@10"}, "'mAP@10' is not a metric of world_dev"),
    # another entry scoring the dev queries: its results would come from the queries phi was selected on
    ({"benchmarks.dev_again": {"kind": "cirr", "root": "data/world/benchmarks/cirr/", "split": "dev"}},
     "benchmarks.dev_again scores the queries phi is selected on (train.validate_on: world_dev"),
    ({"train.validate_on": "world_cirr", "benchmarks.cirr_val": {"kind": "cirr", "root": "data/world/benchmarks/cirr",
                                                               "split": "val"}},
     "benchmarks.cirr_val scores the queries phi is selected on (train.validate_on: world_cirr"),
])
def test_the_params_stage_refuses_what_would_fail_or_mislead_later(tmp_path, stage_cli, change, message):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in change.items():
        section, _, key = dotted.rpartition(".")
        (params[section] if section else params)[key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code, err = stage_cli(tmp_path, "params")
    assert code == 1 and err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_a_dev_split_may_share_a_dataset_with_reported_ones():
    """Same root and kind, another split, or FashionIQ categories that do not overlap: no query in common."""
    from pipeline.evaluation.benchmarks import check_dev

    fiq = {"kind": "fashioniq", "root": "datasets/FashionIQ", "split": "val"}
    check_dev({"benchmarks": {"dev": {**fiq, "groups": ["dress"]}, "test": {**fiq, "groups": ["shirt", "toptee"]}}},
              "dev", "R@10/dress")
    with pytest.raises(PipelineError, match="benchmarks.test scores the queries"):
        check_dev({"benchmarks": {"dev": {**fiq, "groups": ["dress"]}, "test": fiq}}, "dev", "R@10")
    check_dev({"benchmarks": {"dev": {"kind": "cirr", "root": "c", "split": "val"},
                              "test": {"kind": "cirr", "root": "c", "split": "test1"}}}, "dev", "subset_R@1")


def test_a_full_disk_is_a_message_not_a_traceback(capsys):
    def full():
        raise OSError(errno.ENOSPC, "No space left on device", "data/train/phi.pt.tmp")

    assert one_line(full) == 1
    assert "error: the disk is full (data/train/phi.pt.tmp)" in capsys.readouterr().err


def test_every_default_in_the_code_is_params_yaml_s():
    """params.yaml is the one source of every default: each dataclass that reads a section has a
    field for every key there and no other, with the same default (tests and tools construct the
    dataclasses with their defaults, so a drift would make them test another setting)."""
    import dataclasses

    from pipeline.core.executor import ExecutorConfig
    from pipeline.data.masking import MaskingConfig
    from pipeline.data.pairs import PairsConfig
    from pipeline.data.tokens import TokensConfig
    from pipeline.data.world import WorldConfig
    from pipeline.evaluation.geometry import GeometryConfig
    from pipeline.methods import METHODS
    from pipeline.model.contrastive import WorldTraining
    from pipeline.training.loop import TrainConfig

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    sections = {"world": (WorldConfig, params["world"]), "geometry": (GeometryConfig, params["geometry"]),
                "backbone.world_training": (WorldTraining, params["backbone"]["world_training"]),
                "keywords": (KeywordsConfig, params["keywords"]), "pairs": (PairsConfig, params["pairs"]),
                "tokens": (TokensConfig, params["tokens"]), "embed": (EmbedConfig, params["embed"]),
                "evaluate": (EvaluateConfig, params["evaluate"]), "train": (TrainConfig, params["train"]),
                "masking": (MaskingConfig, params["masking"]), "executor": (ExecutorConfig, params["executor"]),
                **{name: (METHODS.get(name).config, {**params[name], **{k: params[k] for k in METHODS.get(name).top_level}})
                   for name in METHODS.names()}}
    for where, (cls, values) in sections.items():
        defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                    for f in dataclasses.fields(cls)}
        assert set(defaults) == set(values), f"{where}: params.yaml keys {sorted(values)} != fields {sorted(defaults)}"
        for key, value in values.items():
            assert typed(cls, {key: value}, where, complete=False).__dict__[key] == defaults[key], f"{where}.{key}"
