import random

import pytest

from pipeline.core.errors import PipelineError
from pipeline.data.masking import (
    FALLBACK_CAPTION,
    MASKING,
    Word,
    caption_rng,
    check_params,
    mask_text,
    select,
    words_of,
)

PARAMS = {"strategy": "all_keywords", "n": 1, "seed": 0}

# "a gray cat , sleeping on the old red sofa near John Smith ." with hand-set POS tags
TEXT = "a gray cat, sleeping on the old red sofa near John Smith."
TAGS = [("a", "DET"), ("gray", "ADJ"), ("cat", "NOUN"), (",", "PUNCT"), ("sleeping", "VERB"), ("on", "ADP"),
        ("the", "DET"), ("old", "ADJ"), ("red", "ADJ"), ("sofa", "NOUN"), ("near", "ADP"), ("John", "PROPN"),
        ("Smith", "PROPN"), (".", "PUNCT")]


def tokens(text, tags):
    starts, at = [], 0
    for token, _ in tags:
        at = text.index(token, at)
        starts.append(at)
        at += len(token)
    return words_of(text, starts, [s + len(t) for s, (t, _) in zip(starts, tags)], [p for _, p in tags])


WORDS = tokens(TEXT, TAGS)
SPANS = [(WORDS[a].start, WORDS[b].end) for a, b in [(0, 2), (6, 9), (11, 12)]]  # keyword runs (DET ADJ NOUN PROPN)


def texts(spans, text=TEXT):
    return [text[s:e] for s, e in spans]


def run(name, words=WORDS, spans=SPANS, seed=0, **params):
    return MASKING.get(name)(words, spans, random.Random(seed), {**PARAMS, **params})


def test_words_know_what_is_alphanumeric():
    assert [w.alnum for w in WORDS][:5] == [True, True, True, False, True]
    assert words_of("猫 🐈", [0, 2], [1, 3], ["PUNCT", "PROPN"]) == [Word(0, 1, "PUNCT", True), Word(2, 3, "PROPN", False)]


def test_all_keywords():
    assert texts(run("all_keywords")) == ["a gray cat", "the old red sofa", "John Smith"]


def test_n_keywords_draws_n_spans_in_caption_order():
    drawn = [tuple(run("n_keywords", seed=s, n=2)) for s in range(20)]
    assert all(len(d) == 2 and set(d) <= set(SPANS) and list(d) == sorted(d) for d in drawn)
    assert len(set(drawn)) == 3  # every pair shows up
    assert run("n_keywords", n=5) == SPANS  # n beyond the spans: all of them


def test_random_token_is_one_word_never_punctuation():
    picked = {texts(run("random_token", seed=s))[0] for s in range(200)}
    assert picked == {t for t, p in TAGS if p != "PUNCT"}


def test_non_keywords_are_maximal_runs_outside_keywords():
    assert texts(run("non_keywords")) == ["sleeping on", "near"]


def test_nouns_are_runs_of_noun_and_propn():
    assert texts(run("nouns")) == ["cat", "sofa", "John Smith"]


def test_fallback_random_word_when_nothing_selected():
    text = "runs quickly and jumps!"
    words = tokens(text, [("runs", "VERB"), ("quickly", "ADV"), ("and", "CCONJ"), ("jumps", "VERB"), ("!", "PUNCT")])
    spans, kind = select(MASKING.get("all_keywords"), words, [], random.Random(0), PARAMS)
    assert kind == "random_word" and len(spans) == 1 and texts(spans, text)[0] in {"runs", "quickly", "and", "jumps"}
    assert select(MASKING.get("nouns"), words, [], random.Random(0), PARAMS)[1] == "random_word"


def test_fallback_a_photo_of_when_no_word():
    text = "🐈 !!"
    words = tokens(text, [("🐈", "SYM"), ("!!", "PUNCT")])
    spans, kind = select(MASKING.get("random_token"), words, [], random.Random(0), PARAMS)
    assert (spans, kind) == ([], "a_photo_of")
    assert mask_text(text, spans) == FALLBACK_CAPTION == "a photo of $"


def test_no_fallback_when_the_strategy_selects():
    assert select(MASKING.get("all_keywords"), WORDS, SPANS, random.Random(0), PARAMS) == (SPANS, None)


def test_mask_text_one_space_separated_placeholder_per_span():
    assert mask_text("gray cat sleeps on a pillow", [(0, 8), (19, 27)]) == "$ sleeps on $"
    assert mask_text(TEXT, SPANS) == "$ , sleeping on $ near $ ."
    assert mask_text("a catdog", [(2, 5), (5, 8)]) == "a $ $"  # adjacent spans never glue into `$$`


def test_caption_rng_depends_on_seed_and_id_only():
    assert caption_rng(0, 7).random() == caption_rng(0, 7).random()
    assert len({caption_rng(s, i).random() for s in range(3) for i in range(3)}) == 9


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(PipelineError, match="unknown masking strategy 'keywords'; valid names: all_keywords, "
                                            "n_keywords, non_keywords, nouns, random_token"):
        check_params({**PARAMS, "strategy": "keywords"})
    with pytest.raises(PipelineError, match="masking.n"):
        check_params({**PARAMS, "strategy": "n_keywords", "n": 0})
    assert check_params(PARAMS) is MASKING.get("all_keywords")
