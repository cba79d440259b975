"""Masked image–text textual inversion (arXiv 2406.18836): phi trained on image–caption
pairs in which one noun is masked in the text and its region in the image.

For each training image one caption and one of its nouns are drawn. The noun is masked in
the image with a class-activation map (CAM) of the frozen CLIP for "a photo of a <noun>",
thresholded at tau (or, as an oracle for ablation, with the object's true mask where the
pairs have one), and the masked pixels are filled. That gives a composed-retrieval triplet
from one pair: the masked image is the reference, the noun the condition, the original image
the target. The loss is a weighted sum of
    query–target:  E(query with $ = phi(v_masked), {} = noun)  vs  v      (InfoNCE over the batch)
    inversion:     E(prompt with $ = phi(v))                    vs  v      (Pic2Word's term)
The paper gives neither the CAM, the fill, the weight nor the query's wording: the choices
here are params, and docs/methods/masked_inversion.md says why each default was chosen.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from tqdm import tqdm

from pipeline.core.errors import PipelineError, quoted
from pipeline.core.params import at_least, below
from pipeline.core.registry import Registry
from pipeline.data.images import ImageSource, open_image, to_rgb
from pipeline.data.pairs import caption_nouns
from pipeline.evaluation.metrics import iou
from pipeline.methods.base import METHODS, Method, Run
from pipeline.methods.common import check_prompt, contrastive, image_latents, logit_scale, prompt_ids
from pipeline.model.cam import CAM, TRUE_MASK_LEVEL
from pipeline.model.text_encoder import encode
from pipeline.training.loop import Objective, fit, new_phi

# Nouns that name the picture, its style or a place in it rather than a thing shown: web
# alt-text is full of them ("stock photo", "vector illustration", "on the left").
SKIP_NOUNS = ("photo", "picture", "image", "rendering", "art", "illustration", "clip", "stock", "download",
              "wallpaper", "design", "icon", "vector", "logo", "idea", "side", "right", "left", "center", "centre",
              "middle", "background", "backdrop")

FILL: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("masked_inversion.fill")
# what replaces the masked pixels, in the model's (normalised) input space
FILL.register("mean")(lambda images: images.mean(dim=(2, 3), keepdim=True).expand_as(images))  # the image's mean colour
FILL.register("grey")(lambda images: torch.zeros_like(images))  # the normalisation's mean: CLIP's grey


@dataclass
class MaskedInversionConfig:
    """params.yaml `masked_inversion`."""

    mask: str = "cam"  # cam: CAM of the frozen CLIP for the noun; oracle: the pairs' true object masks
    cam: str = "gradcam"  # pipeline/model/cam.py CAM
    tau: float = 0.3  # CAM threshold (the paper ablates 0.2, 0.3, 0.4)
    cam_prompt: str = "a photo of a {}"  # the text the CAM explains
    fill: str = "mean"  # FILL: what the masked pixels become
    weight: float = 0.5  # of the query–target term; the inversion term gets 1 - weight
    prompt: str = "a photo of $"  # the inversion term's text
    query: str = "a photo of $ with {}"  # the query–target term's text: $ the masked image, {} the noun
    batch_size: int = 64  # images a CAM pass
    skip_nouns: list[str] = field(default_factory=lambda: list(SKIP_NOUNS))  # never drawn: no region to mask

    def check(self) -> None:
        MASKS.get(self.mask), CAM.get(self.cam), FILL.get(self.fill)
        check_prompt("masked_inversion.prompt", self.prompt)
        check_prompt("masked_inversion.query", self.query, 1)
        if self.cam_prompt.count("{}") != 1:
            raise PipelineError(f"params.yaml: masked_inversion.cam_prompt must hold one '{{}}' (the noun); "
                                f"not {quoted(self.cam_prompt)}")
        for name in ("tau", "weight"):
            at_least(f"masked_inversion.{name}", getattr(self, name), 0)
            below(f"masked_inversion.{name}", getattr(self, name), 1.0000001)
        at_least("masked_inversion.batch_size", self.batch_size, 1)


@dataclass
class MaskedPairs:
    """One training row an image: its chosen caption and noun, the caption without the noun."""

    image: np.ndarray  # image row (data/pairs/latents.npy) of each training row
    caption: list[str]
    noun: list[str]
    masked_caption: list[str]


def mask_noun(text: str, span: tuple[int, int]) -> str:
    """The caption with the noun's characters removed, and the space it leaves."""
    a, b = span
    return re.sub(r"\s+([,.;:!?])", r"\1", " ".join((text[:a] + text[b:]).split()))


def draw_pairs(run: Run, seed: int) -> MaskedPairs:
    """One caption with a noun, and one noun of it, drawn for every image that has one (nouns in
    `skip_nouns` do not count)."""
    texts, spans = caption_nouns(run.pairs)
    skip = {w.lower() for w in run.config.skip_nouns}
    spans = [[(a, b) for a, b in s if t[a:b].lower() not in skip] for t, s in zip(texts, spans)]
    image_of = np.load(run.pairs / "image_of.npy")
    rng = np.random.default_rng(seed)
    by_image: dict[int, list[int]] = {}
    for row, image in enumerate(image_of):
        if spans[row]:
            by_image.setdefault(int(image), []).append(row)
    if not by_image:
        raise PipelineError(f"{run.pairs}/keywords.parquet: no caption has a noun outside masked_inversion.skip_nouns; "
                            f"the method needs one to mask")
    images, captions, nouns, masked = [], [], [], []
    for image in sorted(by_image):
        rows = by_image[image]
        row = rows[rng.integers(len(rows))]
        span = spans[row][rng.integers(len(spans[row]))]
        images.append(image), captions.append(texts[row])
        nouns.append(texts[row][span[0]:span[1]]), masked.append(mask_noun(texts[row], span))
    return MaskedPairs(np.array(images), captions, nouns, masked)


def _cam_masks(run: Run, images: torch.Tensor, nouns: list[str], files: list[str]) -> torch.Tensor:
    c = run.config
    with torch.no_grad():
        texts = run.backbone.model.encode_text(prompt_ids(run, [c.cam_prompt.format(n) for n in nouns]))
    return CAM.get(c.cam)(run.backbone.model, images, texts) >= c.tau


def _true_masks(run: Run, images: torch.Tensor, nouns: list[str], files: list[str]) -> torch.Tensor:
    masks = []
    for f in files:
        if not f or not Path(f).is_file():
            raise PipelineError(f"masked_inversion.mask oracle: no true mask {quoted(f or '(none)')} for an image of "
                                f"data/pairs/images.parquet; the world writes them, other pairs need mask: cam")
        masks.append(torch.from_numpy(np.asarray(Image.open(f).convert("L")) >= TRUE_MASK_LEVEL))
    out = torch.stack(masks).to(images.device)
    if out.shape[-2:] != images.shape[-2:]:
        raise PipelineError(f"true masks are {tuple(out.shape[-2:])} but the model sees {tuple(images.shape[-2:])} "
                            "images: the oracle needs masks in the model's input frame")
    return out


MASKS: Registry[Callable] = Registry("masked_inversion.mask")
MASKS.register("cam")(_cam_masks)
MASKS.register("oracle")(_true_masks)


def masked_images(images: torch.Tensor, masks: torch.Tensor, fill: str) -> torch.Tensor:
    """[B, 3, H, W] model inputs with the pixels of masks [B, H, W] replaced by FILL[fill]."""
    return torch.where(masks[:, None], FILL.get(fill)(images), images)


def masked_latents(run: Run, pairs: MaskedPairs) -> tuple[torch.Tensor, dict]:
    """[N, d] latents of the masked images, and what the masks were like: mean area, and where the
    pairs have true masks, the mean IoU of the masks used with them."""
    c, model = run.config, run.backbone.model
    table = pq.read_table(run.pairs / "images.parquet").to_pydict()
    make = MASKS.get(c.mask)
    out, areas, ious = [], [], []
    for lo in tqdm(range(0, len(pairs.image), c.batch_size), desc=f"masking nouns ({c.mask})", unit="batch"):
        rows = pairs.image[lo:lo + c.batch_size]
        images = torch.stack([run.backbone.preprocess(to_rgb(open_image(ImageSource(Path(table["path"][r])))))
                              for r in rows]).to(run.device)
        files = [table["mask"][r] for r in rows]
        masks = make(run, images, pairs.noun[lo:lo + c.batch_size], files)
        masked = masked_images(images, masks, c.fill)
        with torch.no_grad():
            out.append(model.encode_image(masked).float())
        areas.append(masks.float().mean(dim=(1, 2)))
        if all(f and Path(f).is_file() for f in files):
            ious.append(iou(masks.cpu(), _true_masks(run, images, [], files).cpu()))
    stats = {"images": len(pairs.image), "mask_area": torch.cat(areas).mean().item()}
    if ious:
        stats["iou_with_true_masks"] = torch.cat(ious).mean().item()
    return torch.cat(out), stats


def write_samples(pairs: MaskedPairs, out: Path) -> None:
    """The drawn rows, to see what was masked (data/train/masked_pairs.parquet)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image": pairs.image, "caption": pairs.caption, "noun": pairs.noun,
                             "masked_caption": pairs.masked_caption}), out)


def train(run: Run):
    c = run.config
    v = image_latents(run)
    pairs = draw_pairs(run, run.cfg.seed)
    v_masked, stats = masked_latents(run, pairs)
    print("masked_inversion: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in stats.items()))
    write_samples(pairs, run.out / "masked_pairs.parquet")
    target = v[torch.as_tensor(pairs.image, device=run.device)]
    prompt = prompt_ids(run, [c.prompt])
    query = prompt_ids(run, [c.query.format(n) for n in pairs.noun])
    scale = logit_scale(run)

    def loss(phi, idx, gen):
        i = torch.as_tensor(idx, device=run.device)
        t = target[i]
        qt = contrastive(encode(run.tower, query[i], phi(v_masked[i]), truncate=run.cfg.truncate), t, scale)
        inv = contrastive(encode(run.tower, prompt.expand(len(i), -1), phi(t), truncate=run.cfg.truncate), t, scale)
        return c.weight * qt + (1 - c.weight) * inv

    return fit(new_phi(run.tower, run.embed_dim, run.cfg, run.device),
               Objective(len(target), loss, name="masked inversion"), run.cfg, device=run.device,
               checkpoint=run.checkpoint, fingerprint=run.fingerprint, log=run.log, validation=run.validation)


METHODS.register("masked_inversion")(Method(MaskedInversionConfig, train,
                                            reads=("pairs: images, image latents, captions' nouns",), images=True))
