"""pos_rules: the attribute_ruler's POS rules as a memoised table, for tagging without a parser.

spaCy's English pipelines turn the tagger's fine tags (NN, VBZ, ...) into universal POS
with an attribute_ruler: ~180 Matcher patterns run on every token. In the keywords stage
that Matcher was a third of all CPU time. Without the parser, every POS rule that can
fire looks at one token's TAG, LOWER and IS_SPACE (rules on DEP cannot fire: DEP is
empty), so a token's POS is a function of (tag, lower-case word if a rule names it,
is_space). `pos_rules` memoises that function, asking the ruler itself on a one-token
Doc the first time a key is seen: the same POS as the ruler by construction, from a few
hundred table entries. It sets POS only (not the ruler's MORPH, LEMMA or TAG fix-ups,
which keywords do not read). `rule_words` says whether a ruler's rules have that form;
a pipeline whose rules do not (multi-token rules, REGEX, ...) keeps its ruler.
"""
from __future__ import annotations

import numpy as np
from spacy.attrs import IS_SPACE, LOWER, POS, TAG
from spacy.language import Language
from spacy.tokens import Doc

KEYS = {"TAG", "LOWER", "IS_SPACE", "DEP"}  # token attributes a memoisable rule may test


def _dep_matches_empty(spec) -> bool | None:
    """Whether a DEP spec matches the empty DEP of an unparsed token; None: cannot tell."""
    if isinstance(spec, str):
        return spec == ""
    if isinstance(spec, dict) and spec and set(spec) <= {"IN", "NOT_IN"}:
        return ("" in spec.get("IN", [""])) and ("" not in spec.get("NOT_IN", []))
    return None


def _named_words(spec) -> set[str] | None:
    """The words a LOWER spec names (a word it does not name behaves like any other); None: other operators."""
    if isinstance(spec, str):
        return {spec}
    if isinstance(spec, dict) and spec and set(spec) <= {"IN", "NOT_IN"}:
        return set().union(*map(set, spec.values()))
    return None


def rule_words(ruler) -> set[str] | None:
    """Lower-case words the ruler's live POS rules name, or None if its POS is not a table lookup."""
    words: set[str] = set()
    for rule in ruler.patterns:
        if "POS" not in rule["attrs"]:
            continue
        for pattern in rule["patterns"]:
            live = [_dep_matches_empty(token["DEP"]) for token in pattern if "DEP" in token]
            if None in live:
                return None
            if not all(live):
                continue  # needs a parse: never fires without the parser
            if len(pattern) != 1 or not set(pattern[0]) <= KEYS:
                return None
            if "LOWER" in pattern[0]:
                named = _named_words(pattern[0]["LOWER"])
                if named is None:
                    return None
                words |= named
    return words


class PosRules:
    """Sets each token's POS from (TAG, LOWER if named by a rule, IS_SPACE), memoised."""

    def __init__(self, ruler, words: set[str]):
        self.ruler = ruler
        self.vocab = ruler.vocab
        self.word_ids = {self.vocab.strings.add(w) for w in words}
        self.table: dict[tuple[int, int, int], int] = {}

    def lookup(self, tag: int, lower: int, space: int) -> int:
        key = (tag, lower if lower in self.word_ids else 0, space)
        pos = self.table.get(key)
        if pos is None:  # ask the ruler once; any word it does not name gives the same answer
            probe = Doc(self.vocab, words=[self.vocab.strings[lower]], spaces=[False])
            probe[0].tag = tag
            pos = self.table[key] = self.ruler(probe)[0].pos
        return pos

    def __call__(self, doc: Doc) -> Doc:
        if len(doc):
            table = doc.to_array([TAG, LOWER, IS_SPACE]).tolist()
            pos = np.array([[self.lookup(*row)] for row in table], dtype=np.uint64)
            doc.from_array([POS], pos)
        return doc


@Language.factory("pos_rules")
def make_pos_rules(nlp: Language, name: str, words: list[str]) -> PosRules:
    """`words`: rule_words of the pipeline's attribute_ruler, which pos_rules consults."""
    return PosRules(nlp.get_pipe("attribute_ruler"), set(words))


def replace_ruler(nlp: Language) -> Language:
    """nlp with its attribute_ruler replaced by pos_rules where the ruler's rules allow it."""
    words = rule_words(nlp.get_pipe("attribute_ruler")) if "attribute_ruler" in nlp.pipe_names else None
    if words is not None:
        nlp.add_pipe("pos_rules", after="attribute_ruler", config={"words": sorted(words)})
        nlp.remove_pipe("attribute_ruler")
    return nlp
