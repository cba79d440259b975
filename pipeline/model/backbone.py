"""The frozen vision-language model: any open_clip model by name, with weights from an
open_clip pretrained tag or a local checkpoint file, through one loader.

The project's own small architecture `lincir-world` is registered with open_clip here
(pipeline/model/model_configs/), so it is created, saved and loaded like any other model.
"""
from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import open_clip
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from open_clip.pretrained import HF_WEIGHTS_NAME, _get_safe_alternatives  # open-clip-torch is pinned

from pipeline.core import io
from pipeline.core.errors import PipelineError

open_clip.add_model_config(Path(__file__).parent / "model_configs")


@dataclass
class BackboneConfig:
    """params.yaml `backbone` (stages/backbone.py); `world_training` is used with pretrained: world."""

    model: str
    pretrained: str
    world_training: dict = field(default_factory=dict)


@dataclass
class Backbone:
    model: torch.nn.Module  # an open_clip CLIP, frozen
    preprocess: Callable  # PIL image -> tensor, the model's own eval transform
    tokenizer: Callable
    name: str
    pretrained: str


def get_tokenizer(model_name: str):
    check_model_name(model_name)
    return open_clip.get_tokenizer(model_name)


def check_model_name(model_name: str) -> None:
    if model_name not in open_clip.list_models():
        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=8, cutoff=0.5)
        raise PipelineError(f"backbone.model {model_name!r} is not an open_clip model name; "
                            f"similar names: {', '.join(close) or 'none'} (see open_clip.list_models())")


def create(model_name: str, pretrained: str | None = None, device: str = "cpu") -> Backbone:
    """Creates `model_name`; `pretrained` is an open_clip tag, a checkpoint path or None (random).

    A tag is resolved to its file first, so a model created from a tag and one loaded later
    from the recorded file (`load`) are built the same way.
    """
    check_model_name(model_name)
    weights = resolve_weights(model_name, pretrained) if pretrained else None
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=str(weights) if weights else None, device=device)
    except Exception as e:  # a corrupt file or one of another architecture: say which, not a deep traceback
        raise PipelineError(f"could not load {model_name} weights from {weights}: {type(e).__name__}: {e}") from None
    return Backbone(model, preprocess, open_clip.get_tokenizer(model_name), model_name, pretrained or "")


def freeze(backbone: Backbone) -> Backbone:
    backbone.model.eval().requires_grad_(False)
    return backbone


def load(identity_file: Path, device: str = "cpu") -> Backbone:
    """Loads the frozen backbone that the backbone stage recorded in `identity_file`."""
    return from_identity(read_identity(identity_file), device)


def read_identity(identity_file: Path) -> dict:
    """The backbone stage's record: {"model", "pretrained" (the weights file), "sha256"}."""
    if not Path(identity_file).is_file():
        raise PipelineError(f"{identity_file} not found: run the backbone stage first (dvc repro backbone)")
    try:
        ident = json.loads(Path(identity_file).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise PipelineError(f"{identity_file} is not a backbone record (JSON): {str(e)[:100]}") from None
    if not isinstance(ident, dict) or not all(isinstance(ident.get(k), str) for k in ("model", "pretrained", "sha256")):
        raise PipelineError(f"{identity_file} is not a backbone record: it needs \"model\", \"pretrained\" (the weights "
                            f"file) and \"sha256\", as the backbone stage writes them")
    return ident


def from_identity(ident: dict, device: str = "cpu") -> Backbone:
    return freeze(create(ident["model"], ident["pretrained"], device))


def check_weights(ident: dict, what: str) -> None:
    """Refuses a weights file that is gone or no longer the one `ident` recorded. Where `ident`
    also recorded the file's size and mtime when it was hashed (`stat`) and they are unchanged,
    the file is not hashed again (as make and DVC trust them): seconds saved per call on ViT-L."""
    weights = Path(ident["pretrained"])
    if weights.is_file() and ident.get("stat") == io.file_stat(weights):
        return
    if not weights.is_file() or io.file_sha256(weights) != ident["sha256"]:
        raise PipelineError(f"the backbone weights {weights} recorded in {what} are missing or changed since "
                            f"(sha256 {ident['sha256'][:12]}...)")


def resolve_weights(model_name: str, pretrained: str) -> Path:
    """A local checkpoint path for `pretrained`: the file itself, or an open_clip tag's file from
    the Hugging Face cache, downloaded there first unless HF_HUB_OFFLINE is set."""
    if Path(pretrained).is_file():
        return Path(pretrained)
    check_model_name(model_name)
    cfg = tag_config(model_name, pretrained)
    repo_id, files = _hub_files(cfg)
    for name in files:
        cached = try_to_load_from_cache(repo_id, name)
        if isinstance(cached, str):
            return Path(cached)
    fetch = (f"pre-fetch {repo_id} ({' or '.join(files)}) into the Hugging Face cache {hf_constants.HF_HUB_CACHE} "
             f"(moved with HF_HOME or HF_HUB_CACHE) on a connected machine, e.g. with `python -c \"import open_clip; "
             f"open_clip.create_model('{model_name}', pretrained='{pretrained}')\"`, and copy it here; or set "
             f"backbone.pretrained to a local checkpoint file")
    if io.offline():  # checked before any request: offline, the hub client would retry and time out
        raise PipelineError(f"{model_name}/{pretrained} is not in the cache and HF_HUB_OFFLINE is set: {fetch}")
    why = io.unreachable(hf_constants.ENDPOINT)
    if why:  # no network: say so now, not after the hub client's retries
        raise PipelineError(f"{model_name}/{pretrained} is not in the cache and the Hugging Face Hub "
                            f"({hf_constants.ENDPOINT}) cannot be reached ({why}): {fetch}. Without network, "
                            f"HF_HUB_OFFLINE=1 says so before any request")
    try:
        return Path(open_clip.download_pretrained(cfg))
    except Exception as e:
        raise PipelineError(f"could not fetch {model_name}/{pretrained}: {type(e).__name__}: {e}\n{fetch}") from None


def tag_config(model_name: str, tag: str) -> dict:
    """open_clip's config of pretrained `tag` of `model_name`; an error naming the valid tags, or
    the model name to use where the tag's weights need another activation."""
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise PipelineError(f"backbone.pretrained {tag!r} is neither a checkpoint file nor a tag of "
                            f"{model_name} (tags: {', '.join(tags) or 'none'})")
    # open_clip only warns here (OpenAI weights were trained with QuickGELU): the model would
    # run with the wrong activation and give degraded features, so refuse and name the fix
    wants = bool(cfg.get("quick_gelu", False))
    if wants != bool(open_clip.get_model_config(model_name).get("quick_gelu", False)):
        fix = f"{model_name}-quickgelu" if wants else model_name.removesuffix("-quickgelu")
        raise PipelineError(f"{model_name}/{tag}: these weights were trained with{'' if wants else 'out'} QuickGELU; "
                            f"set backbone.model to {fix!r}")
    return cfg


def _hub_files(cfg: dict) -> tuple[str, list[str]]:
    """The hub repo of a tag and its candidate weight files, in the order open_clip tries them."""
    repo_id, filename = os.path.split(cfg["hf_hub"])
    filename = filename or HF_WEIGHTS_NAME
    return repo_id, [*_get_safe_alternatives(filename), filename]


@torch.no_grad()
def embed_dim(backbone: Backbone) -> int:
    """Size of the joint embedding space (phi's input)."""
    return backbone.model.encode_text(backbone.tokenizer(["a"]).to(next(backbone.model.parameters()).device)).shape[1]
