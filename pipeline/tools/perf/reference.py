"""The straightforward reference paths, as the authors' code (navervision/lincir) does them.

`lincir perf` runs each beside the pipeline's optimised path on the same inputs. Each
computes the same result as the optimised path (tests/test_perf.py checks it), so the
ratio measures the optimisations, not a difference in the work done:

- training (`train_config`, `smp_loss`): the official `train_phi.py` loop: every step
  encodes the original caption (z_c) and the masked one at the full 77-token context, in
  fp32 on CPU / fp16 on GPU (the authors' `--mixed_precision fp16`), batches in random
  order. It is `pipeline.methods.lincir.train_phi` with its optimisations switched off: the same
  loop, so only the optimisations differ. (Generous to the reference: the official data
  loader also runs spaCy and the tokenizer on every caption of every step; those costs
  are measured by the keywords and tokens benches.)
- keywords (`load_full_nlp`, `keyword_spans`): `loader.extract_keywords_spacy`: the full
  spaCy pipeline (tok2vec, tagger, parser, attribute_ruler, lemmatizer, ner) called on one
  caption at a time, tokens walked in Python.
- tokens (`tokenize_rows`): the loader's `__getitem__`: each caption and its masked copy
  tokenized one call each, padded to the context.
- gallery embedding (`embed_images`): one image at a time, decoded in the main process, fp32.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np


def train_config(cfg, device: str):
    """`cfg` (a pipeline.training.loop.TrainConfig) with every optimisation off: the official loop's settings."""
    return replace(cfg, truncate=False, cache_targets=False, bucket_by_length=False, compile=False,
                   precision="fp16" if device == "cuda" else "fp32")


def smp_loss(tower, phi, ids, masked_ids, lincir, gen):
    """One reference step's loss: z_c encoded now at the full context, then the SMP loss, also at
    the full context (what `train_phi` computes with `train_config(cfg)`)."""
    import torch

    from pipeline.methods.lincir import smp_loss
    from pipeline.model.text_encoder import encode

    with torch.no_grad():
        z_c = encode(tower, ids, truncate=False).float()
    return smp_loss(tower, phi, masked_ids, z_c, lincir, gen, truncate=False)


def load_full_nlp(model: str):
    """The spaCy package with every default component, as `spacy.load('en_core_web_sm')` in the official loader."""
    import spacy

    return spacy.load(model)


def keyword_spans(nlp, text: str, pos: set[str]) -> list[tuple[int, int]]:
    """`extract_keywords_spacy`: one `nlp(text)` call, maximal runs of tokens whose POS is in `pos`
    (returned as char spans rather than joined strings, to compare with the keywords stage)."""
    spans, start, end = [], None, None
    for token in nlp(text):
        if token.pos_ in pos:
            if start is None:
                start = token.idx
            end = token.idx + len(token.text)
        elif start is not None:
            spans.append((start, end))
            start = None
    if start is not None:
        spans.append((start, end))
    return spans


def keywords(nlp, texts: Iterable[str], pos: Sequence[str]) -> list[list[tuple[int, int]]]:
    keep = set(pos)
    return [keyword_spans(nlp, text, keep) for text in texts]


def tokenize_rows(rows: Iterable[tuple[int, str, dict]], tokenizer, params: dict, context_length: int,
                  placeholder: int) -> tuple[np.ndarray, np.ndarray]:
    """ids, masked uint16 [N, C] from (id, text, keyword row) triples (pipeline.data.tokens.read_rows):
    each caption masked (pipeline.data.masking), then it and its masked copy tokenized one call each;
    a masked row whose placeholders all fell past the context becomes `a photo of $`, as in the loader."""
    from pipeline.data import masking

    strategy = masking.check_params(params)
    fallback = tokenizer([masking.FALLBACK_CAPTION], context_length=context_length)[0]
    ids, masked = [], []
    for caption_id, text, row in rows:
        words = masking.words_of(text, row["word_start"], row["word_end"], row["word_pos"])
        spans = list(zip(row["span_start"], row["span_end"]))
        chosen, _ = masking.select(strategy, words, spans, masking.caption_rng(params["seed"], caption_id), params)
        tokens = tokenizer([text], context_length=context_length)[0]
        replaced = tokenizer([masking.mask_text(text, chosen)], context_length=context_length)[0]
        if not (replaced == placeholder).any():
            replaced = fallback
        ids.append(tokens.numpy().astype(np.uint16))
        masked.append(replaced.numpy().astype(np.uint16))
    return np.stack(ids), np.stack(masked)


def embed_images(model, preprocess, paths: Sequence[Path], device: str) -> np.ndarray:
    """Image latents [N, d] float32: one image at a time, decoded in this process, fp32."""
    import torch
    from PIL import Image

    out = []
    with torch.no_grad():
        for path in paths:
            with Image.open(path) as image:
                pixels = preprocess(image.convert("RGB")).unsqueeze(0).to(device)
            out.append(model.encode_image(pixels).float().cpu())
    return torch.cat(out).numpy()
