"""The prompt a composed query is written with, per method and benchmark kind, as each method's
official code evaluates it.

A prompt is a template with one `$` (phi's token) and one `{}` (a condition text), and which of a
query's condition texts it is written with (FashionIQ's queries have two, the two relative
captions joined in both orders; their features are averaged). `evaluate.prompt` chooses:
`method` (the default), each method's own prompt where its official code has one for the kind
and `evaluate.template` elsewhere; `template`, `evaluate.template` for every method and kind.

The official prompts (`*` is Pic2Word's placeholder, `$` this pipeline's):
- LinCIR (navervision/lincir validate.py) and SEARLE (miccunifi/SEARLE validate.py):
  "a photo of $ that {}" on CIRR, CIRCO and FashionIQ (both orders averaged);
- Pic2Word (google-research/composed_image_retrieval src/data.py): CIRR "a photo of * , {}",
  FashionIQ "a photo of * , {c2} and {c1}", the second caption first, one order only.
A kind that a method's code does not evaluate (Pic2Word: CIRCO, GeneCIS; SEARLE: GeneCIS;
masked inversion, which has no public code: every kind) gets `evaluate.template`.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.registry import Registry


@dataclass(frozen=True)
class Prompt:
    template: str  # one `$` and one `{}`
    texts: tuple[int, ...] | None = None  # which condition texts of a query; None: all, features averaged


def picked(captions: tuple[str, ...], texts: tuple[int, ...] | None) -> tuple[str, ...]:
    """The condition texts of a query that a prompt's `texts` names (all for None)."""
    return captions if texts is None else tuple(captions[i] for i in texts)


THAT = Prompt("a photo of $ that {}")
# {method: {benchmark kind: its official evaluation prompt}}
OFFICIAL: dict[str, dict[str, Prompt]] = {
    "lincir": {"circo": THAT, "cirr": THAT, "fashioniq": THAT},
    "searle": {"circo": THAT, "cirr": THAT, "fashioniq": THAT},
    # FashionIQ's second text is "{c2} and {c1}" (pipeline/evaluation/benchmarks/fashioniq.py)
    "pic2word": {"cirr": Prompt("a photo of $ , {}"), "fashioniq": Prompt("a photo of $ , {}", texts=(1,))},
}

# evaluate.prompt: (method, benchmark kind, evaluate.template) -> the prompt
PROMPTS: Registry = Registry("evaluate.prompt")
PROMPTS.register("method")(lambda method, kind, template: OFFICIAL.get(method, {}).get(kind, Prompt(template)))
PROMPTS.register("template")(lambda method, kind, template: Prompt(template))


def prompt_for(choice: str, method: str, kind: str, template: str) -> Prompt:
    """The prompt method `method`'s phi is queried with on a benchmark of `kind`."""
    return PROMPTS.get(choice)(method, kind, template)
