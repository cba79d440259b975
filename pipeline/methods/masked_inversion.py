"""Masked image–text textual inversion (arXiv 2406.18836): phi trained on image–caption
pairs in which one noun is masked in the text and its region in the image.

Its candidates are every noun of every caption of a training image (nouns in `skip_nouns`
aside). The noun is masked in the image with a class-activation map (CAM) of the frozen CLIP
for "a photo of a <noun>", thresholded at tau (or, as an oracle for ablation, with the object's
true mask where the pairs have one), and the masked pixels are filled; each distinct (image,
noun) is masked and embedded once. A draw picks, for an image, one of its captions with a noun
and one noun of it (`draw`: again at every step, or once for the whole run). That gives a
composed-retrieval triplet from one pair: the masked image is the reference, the noun the
condition, the original image the target. The loss is a weighted sum of
    query–target:  E(query with $ = phi(v_masked), {} = noun)  vs  v      (InfoNCE over the batch)
    inversion:     E(prompt with $ = phi(v))                    vs  v      (Pic2Word's term)
No code of the paper is public and its summary gives neither the CAM, the fill, the weight, the
query's wording, when the noun is drawn nor the optimiser: the choices here are params, and
docs/methods/masked_inversion.md says why each default was chosen.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
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
from pipeline.methods.common import SKIP_NOUNS, check_prompt, contrastive, image_latents, logit_scale, prompt_ids
from pipeline.model.cam import CAM, TRUE_MASK_LEVEL
from pipeline.model.phi import PHI
from pipeline.model.text_encoder import encode
from pipeline.training.loop import Objective, TrainConfig, fit, new_phi
from pipeline.training.recipe import Recipe

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
    draw: str = "step"  # DRAWS: an image's noun drawn again every step, or once for the whole run
    phi: str = "official"  # phi's architecture: the paper's 3-layer MLP, d -> 4d -> 4d -> w
    dropout: float = 0.5

    def check(self) -> None:
        MASKS.get(self.mask), CAM.get(self.cam), FILL.get(self.fill), DRAWS.get(self.draw), PHI.get(self.phi)
        at_least("masked_inversion.dropout", self.dropout, 0)
        below("masked_inversion.dropout", self.dropout, 1)
        check_prompt("masked_inversion.prompt", self.prompt)
        check_prompt("masked_inversion.query", self.query, 1)
        if self.cam_prompt.count("{}") != 1:
            raise PipelineError(f"params.yaml: masked_inversion.cam_prompt must hold one '{{}}' (the noun); "
                                f"not {quoted(self.cam_prompt)}")
        for name in ("tau", "weight"):
            at_least(f"masked_inversion.{name}", getattr(self, name), 0)
            below(f"masked_inversion.{name}", getattr(self, name), 1.0000001)
        at_least("masked_inversion.batch_size", self.batch_size, 1)


def recipe(c: MaskedInversionConfig, cfg: TrainConfig) -> Recipe:
    """The paper's phi (an MLP d -> 4d -> 4d -> w, `masked_inversion.phi`); the paper's summary gives
    no optimiser, so `train`'s (LinCIR's) AdamW."""
    return Recipe(c.phi, c.dropout, cfg.lr, cfg.weight_decay)


@dataclass
class Candidates:
    """Every (image, caption, noun) a draw can pick, grouped by image. The training rows are the
    images with at least one candidate, in order."""

    image: np.ndarray  # [M] each candidate's image row (data/pairs/latents.npy)
    caption: list[str]
    noun: list[str]
    chance: np.ndarray  # [M] its chance within its image: 1 / (captions with a noun) / (nouns of its caption)
    row: np.ndarray  # [M] its training row
    masked: np.ndarray  # [M] its row of the masked latents: one a distinct (image, noun)
    masked_image: np.ndarray  # [K] the image of each masked latent
    masked_noun: list[str]  # [K] its noun

    @property
    def rows(self) -> int:
        return int(self.row[-1]) + 1

    @property
    def images(self) -> np.ndarray:
        """[rows] the image of each training row."""
        return self.image[np.searchsorted(self.row, np.arange(self.rows))]

    @cached_property
    def _tiles(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(row r + the cumulative chance of each candidate within its row, each row's last candidate)."""
        starts = np.searchsorted(self.row, np.arange(self.rows))
        within = np.cumsum(self.chance) - np.r_[0, np.cumsum(self.chance)][starts][self.row]
        return torch.as_tensor(self.row + within), torch.as_tensor(np.r_[starts[1:], len(self.row)] - 1)

    def pick(self, rows: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The candidate of each training row in `rows` that u ~ Unif[0, 1) lands on: row r's
        candidates tile [r, r + 1) in proportion to their chances."""
        keys, last = (t.to(rows.device) for t in self._tiles)
        # the last key of a row is r + 1 up to rounding: never let u spill into the next row
        return torch.minimum(torch.searchsorted(keys, rows.double() + u.double(), right=True), last[rows])


def candidates(run: Run) -> Candidates:
    """Every noun of every caption of every image, nouns in `skip_nouns` aside."""
    texts, spans = caption_nouns(run.pairs)
    skip = {w.lower() for w in run.config.skip_nouns}
    spans = [[(a, b) for a, b in s if t[a:b].lower() not in skip] for t, s in zip(texts, spans)]
    by_image: dict[int, list[int]] = {}
    for caption, image in enumerate(np.load(run.pairs / "image_of.npy")):
        if spans[caption]:
            by_image.setdefault(int(image), []).append(caption)
    if not by_image:
        raise PipelineError(f"{run.pairs}/keywords.parquet: no caption has a noun outside masked_inversion.skip_nouns; "
                            f"the method needs one to mask")
    image, caption, noun, chance, row, masked, distinct = [], [], [], [], [], [], {}
    for r, i in enumerate(sorted(by_image)):
        for c in by_image[i]:
            for a, b in spans[c]:
                word = texts[c][a:b]
                image.append(i), caption.append(texts[c]), noun.append(word), row.append(r)
                chance.append(1 / len(by_image[i]) / len(spans[c]))
                masked.append(distinct.setdefault((i, word.lower()), len(distinct)))
    return Candidates(np.array(image), caption, noun, np.array(chance), np.array(row), np.array(masked),
                      np.array([i for i, _ in distinct]), [w for _, w in distinct])


Draw = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # (training rows, the step's generator) -> candidates


def _draw_each_step(cands: Candidates, seed: int) -> tuple[Draw, np.ndarray]:
    return (lambda rows, gen: cands.pick(rows, torch.rand(len(rows), generator=gen, device=rows.device))), \
        np.arange(len(cands.noun))


def _draw_once(cands: Candidates, seed: int) -> tuple[Draw, np.ndarray]:
    fixed = cands.pick(torch.arange(cands.rows), torch.rand(cands.rows, generator=torch.Generator().manual_seed(seed)))
    return (lambda rows, gen: fixed.to(rows.device)[rows]), fixed.numpy()


# masked_inversion.draw: (candidates, train.seed) -> (the draw, the candidates it can ever pick)
DRAWS: Registry[Callable] = Registry("masked_inversion.draw")
DRAWS.register("step")(_draw_each_step)
DRAWS.register("once")(_draw_once)


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


def masked_latents(run: Run, images: np.ndarray, nouns: list[str]) -> tuple[torch.Tensor, dict]:
    """[N, d] latents of images (rows of data/pairs/images.parquet) with their nouns masked, and what
    the masks were like: mean area, and where the pairs have true masks, the mean IoU with them."""
    c, model = run.config, run.backbone.model
    table = pq.read_table(run.pairs / "images.parquet").to_pydict()
    make = MASKS.get(c.mask)
    out, areas, ious = [], [], []
    for lo in tqdm(range(0, len(images), c.batch_size), desc=f"masking nouns ({c.mask})", unit="batch"):
        rows = images[lo:lo + c.batch_size]
        pixels = torch.stack([run.backbone.preprocess(to_rgb(open_image(ImageSource(Path(table["path"][r])))))
                              for r in rows]).to(run.device)
        files = [table["mask"][r] for r in rows]
        masks = make(run, pixels, nouns[lo:lo + c.batch_size], files)
        with torch.no_grad():
            out.append(model.encode_image(masked_images(pixels, masks, c.fill)).float())
        areas.append(masks.float().mean(dim=(1, 2)))
        if all(f and Path(f).is_file() for f in files):
            ious.append(iou(masks.cpu(), _true_masks(run, pixels, [], files).cpu()))
    stats = {"masked_images": len(images), "mask_area": torch.cat(areas).mean().item()}
    if ious:
        stats["iou_with_true_masks"] = torch.cat(ious).mean().item()
    return torch.cat(out), stats


def write_candidates(cands: Candidates, out: Path) -> None:
    """What a draw can pick and its chance, to see what is masked (data/train/masked_pairs.parquet)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image": cands.image, "caption": cands.caption, "noun": cands.noun,
                             "chance": cands.chance}), out)


def train(run: Run):
    c = run.config
    v = image_latents(run)
    cands = candidates(run)
    draw, reachable = DRAWS.get(c.draw)(cands, run.cfg.seed)
    needed = np.unique(cands.masked[reachable])  # every (image, noun) a draw can pick, masked once
    v_masked, stats = masked_latents(run, cands.masked_image[needed], [cands.masked_noun[k] for k in needed])
    print("masked_inversion: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in {"images": cands.rows, "candidates": len(cands.noun),
                                                         **stats}.items()))
    write_candidates(cands, run.out / "masked_pairs.parquet")
    target = v[torch.as_tensor(cands.images, device=run.device)]
    row_of = np.full(len(cands.masked_image), -1)
    row_of[needed] = np.arange(len(needed))
    masked_of = torch.as_tensor(row_of[cands.masked], device=run.device)  # -1: never drawn
    prompt = prompt_ids(run, [c.prompt])
    query = prompt_ids(run, [c.query.format(n) for n in cands.noun])
    scale = logit_scale(run)

    def loss(phi, idx, gen):
        i = torch.as_tensor(idx, device=run.device)
        picked = draw(i, gen)
        t = target[i]
        qt = contrastive(encode(run.tower, query[picked], phi(v_masked[masked_of[picked]]), truncate=run.cfg.truncate),
                         t, scale)
        inv = contrastive(encode(run.tower, prompt.expand(len(i), -1), phi(t), truncate=run.cfg.truncate), t, scale)
        return c.weight * qt + (1 - c.weight) * inv

    return fit(new_phi(run.tower, run.embed_dim, run.cfg, run.device, run.recipe),
               Objective(len(target), loss, name="masked inversion"), run.cfg, device=run.device,
               checkpoint=run.checkpoint, fingerprint=run.fingerprint, log=run.log, validation=run.validation,
               recipe=run.recipe)


METHODS.register("masked_inversion")(Method(MaskedInversionConfig, train,
                                            reads=("pairs: images, image latents, captions' nouns",), images=True,
                                            recipe=recipe))
