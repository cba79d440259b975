"""Each method's evaluation prompt per benchmark kind (pipeline/evaluation/prompts.py), and the
queries written with it: Pic2Word's FashionIQ query is its one order, "{c2} and {c1}"."""
import numpy as np
import pytest
import torch

from pipeline.core.errors import PipelineError
from pipeline.evaluation.benchmarks.base import Query
from pipeline.evaluation.benchmarks.fashioniq import condition_texts
from pipeline.evaluation.prompts import Prompt, prompt_for
from pipeline.evaluation.queries import composed_queries, pseudo_token_queries, query_context
from pipeline.model.backbone import embed_dim
from pipeline.model.phi import build_phi


def test_each_method_has_its_official_prompt_and_the_template_elsewhere():
    template = "a picture of $ where {}"
    assert prompt_for("method", "pic2word", "cirr", template) == Prompt("a photo of $ , {}")
    assert prompt_for("method", "pic2word", "fashioniq", template) == Prompt("a photo of $ , {}", texts=(1,))
    assert prompt_for("method", "pic2word", "circo", template) == Prompt(template)  # Pic2Word's code has no CIRCO
    for method in ("lincir", "searle"):
        assert prompt_for("method", method, "fashioniq", template) == Prompt("a photo of $ that {}")
        assert prompt_for("method", method, "genecis", template) == Prompt(template)
    assert prompt_for("method", "masked_inversion", "cirr", template) == Prompt(template)  # no public code
    assert prompt_for("template", "pic2word", "cirr", template) == Prompt(template)
    with pytest.raises(PipelineError, match="unknown evaluate.prompt 'paper'"):
        prompt_for("paper", "lincir", "cirr", template)


def test_pic2words_fashioniq_query_is_its_one_order(world_backbone):
    b = world_backbone
    torch.manual_seed(0)
    phi = build_phi("official", embed_dim(b), b.model.token_embedding.weight.shape[1], 0.0).eval()
    latents = np.random.default_rng(0).normal(size=(2, embed_dim(b))).astype(np.float32)
    c1, c2 = "is red.", "has long sleeves"
    query = Query("dress-0", "a", condition_texts([c1, c2]), ("b",), group="dress")
    both, one = (query_context(b, ["a", "b"], latents, {"trained": phi}, template=prompt, normalize_image_latent=False,
                               device="cpu") for prompt in (Prompt("a photo of $ that {}"),
                                                             Prompt("a photo of $ , {}", texts=(1,))))
    single = composed_queries(one, latents[:1], ["has long sleeves and is red"], phi)[0]
    assert np.allclose(pseudo_token_queries(one, [query], phi)[0], single / np.linalg.norm(single), atol=1e-6)
    orders = composed_queries(both, latents[[0, 0]], ["is red and has long sleeves", "has long sleeves and is red"], phi)
    averaged = (orders / np.linalg.norm(orders, axis=1, keepdims=True)).sum(0)
    assert np.allclose(pseudo_token_queries(both, [query], phi)[0], averaged / np.linalg.norm(averaged), atol=1e-6)
