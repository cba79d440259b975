"""Augmented views of the pairs' images, embedded once: Pic2Word's training augmentation.

Pic2Word's training transform (google-research/composed_image_retrieval, model/clip.py,
`_transform(is_train=True)`) is RandomResizedCrop(n_px, scale=(0.9, 1.0), bicubic) in place of
the evaluation's resize and centre crop. The official code draws a fresh crop of every image in
every epoch; here the pairs stage draws `pairs.views` crops of each image once, each seeded by
(pairs.view_seed, image, view) so the same params give the same crops on any machine, and embeds
them with the frozen image encoder (data/pairs/views.npy, [images, views, d]). Pic2Word then
draws one view per image per step. The encoder is frozen, so a crop embedded once has the latent
it would have every step; what differs from the official code is that a run sees `views` crops of
an image rather than a new one each epoch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, RandomResizedCrop
from tqdm import tqdm

from pipeline.core.errors import PipelineError
from pipeline.data.images import ImageSource, open_image, to_rgb

RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect-ratio range, which Pic2Word keeps


def crop_box(image: Image.Image, scale: tuple[float, float], seed: int, image_row: int, view: int,
             ) -> tuple[int, int, int, int]:
    """(top, left, height, width) of view `view` of image `image_row`: RandomResizedCrop's own draw,
    from a generator seeded by (seed, image, view) rather than the global one."""
    state = np.random.SeedSequence([seed, image_row, view]).generate_state(1)[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(state))
        return RandomResizedCrop.get_params(image, list(scale), list(RATIO))


def split_preprocess(preprocess) -> tuple[list[int], Compose]:
    """(the model's input size, what its evaluation transform does after the centre crop): a view
    replaces resize + centre crop by a random resized crop and keeps the rest (RGB, tensor, normalise)."""
    steps = list(getattr(preprocess, "transforms", []))
    crops = [i for i, t in enumerate(steps) if isinstance(t, CenterCrop)]
    if not crops:
        raise PipelineError("the backbone's image preprocess has no centre crop to replace by Pic2Word's random "
                            "resized crop; set pairs.views to 0 to train without augmented views")
    return list(steps[crops[0]].size), Compose(steps[crops[0] + 1:])


class _Views(Dataset):
    """Crop k is view k % views of image k // views; an image is decoded once for its consecutive views."""

    def __init__(self, paths: list[Path], views: int, scale, seed: int, preprocess):
        self.paths, self.views, self.scale, self.seed = paths, views, tuple(scale), seed
        self.size, self.tail = split_preprocess(preprocess)
        self._row, self._image = None, None

    def __len__(self) -> int:
        return len(self.paths) * self.views

    def __getitem__(self, k: int) -> torch.Tensor:
        row, view = divmod(k, self.views)
        if row != self._row:
            self._row, self._image = row, to_rgb(open_image(ImageSource(self.paths[row])))
        box = crop_box(self._image, self.scale, self.seed, row, view)
        return self.tail(TF.resized_crop(self._image, *box, self.size, interpolation=InterpolationMode.BICUBIC))


@torch.no_grad()
def embed_views(model: torch.nn.Module, preprocess, paths: list[Path], *, views: int, scale, seed: int,
                batch_size: int, num_workers: int, device: str) -> np.ndarray:
    """[images, views, d] float32 unnormalised latents of `views` (>= 1) random resized crops of each image."""
    loader = DataLoader(_Views(paths, views, scale, seed, preprocess), batch_size=batch_size,
                        num_workers=num_workers, pin_memory=device == "cuda")
    dtype = torch.float16 if device == "cuda" else torch.float32
    out = []
    for images in tqdm(loader, desc=f"embedding {views} augmented views an image", unit="batch"):
        with torch.autocast(device, dtype=dtype, enabled=device == "cuda"):
            out.append(model.encode_image(images.to(device)).float().cpu())
    return torch.cat(out).numpy().reshape(len(paths), views, -1)
