"""The guard (both methods, on by default): what a copy or paraphrase of an eval item must keep.

Every number and unit in the eval item, its operation class (add, sub, mul, div, rate words or symbols), and every
capitalised word that does not start a sentence (a named entity), or is an acronym or Roman numeral, must occur in the
training text. It reads meaning, not spelling (``guard_words``, over text.py's vocabularies): number words are digits
("one" = 1, "twenty-one" = 21, "a dozen" = 12), every spelling of a unit is one term ("km", "kilometres" =
kilometer; "$20" holds a dollar; "mph" = mile per hour), "each", "per", "apiece", "every", "a piece", "an hour" are
one rate class, "increased"/"incremented" one add class. A copy or paraphrase keeps them; a near miss from the same
template with other numbers or names does not, and MiniLM alone cannot tell "23 plus 58" from "24 plus 59".
``guard_reason`` says what a vetoed pair lacks; the vetoes that scored above a threshold are kept for review.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import NamedTuple

from menagerie.data.contamination.text import NUMBER_WORDS, OPERATIONS, TOKEN, UNIT_OF, UNITS, fold_numbers, lowered

_CAPITALISED = re.compile(r"\b(?:[A-Z][a-z]+|[A-Z]{2,})\b")  # names, acronyms, Roman numerals
_SPEEDS = {"mph": ("mile", "per", "hour"), "kph": ("kilometer", "per", "hour"), "kmh": ("kilometer", "per", "hour")}
_RATE_PHRASE = re.compile(r"\b(?:a|an)\s+(?:piece|head|hour|day|week|month|year|minute|second|person|unit|item)\b")


def _counted(word: str) -> bool:
    """Words whose repeats the guard counts: numbers and units ("54 + 54" needs two 54s)."""
    return word.isdigit() or word in UNITS


def guard_words(text: str) -> set[str]:
    """What the guard reads of `text`: its words with number words as digits, units in one spelling, repeats of
    numbers and units counted (the second "54" is "54#2"), and its operation classes as ``op:<class>``."""
    low = lowered(text)
    tokens = TOKEN.findall(low)
    if not NUMBER_WORDS.isdisjoint(tokens):
        tokens = fold_numbers(tokens)
    if not _SPEEDS.keys().isdisjoint(tokens):
        tokens = [part for t in tokens for part in _SPEEDS.get(t, (t,))]
    counts = Counter([UNIT_OF.get(t, t) for t in tokens])
    if "$" in low:  # "$20" is "20 dollars"
        counts["dollar"] += low.count("$")
    out = set(counts)
    for word, count in counts.items():
        if count > 1 and _counted(word):
            out.update(f"{word}#{k}" for k in range(2, count + 1))
    out.update(f"op:{name}" for name, vocab in OPERATIONS.items() if not vocab.isdisjoint(counts))
    if "op:rate" not in out and _RATE_PHRASE.search(low):
        out.add("op:rate")
    return out


class GuardTerms(NamedTuple):
    """What a copy or paraphrase of an eval item must keep."""

    words: frozenset[str]  # its numbers and units (repeats marked, see guard_words) and named entities, all of them
    ops: frozenset[str]  # its operation classes (op:add, op:sub, op:mul, op:div, op:rate): at least one of them


def guard_terms(text: str) -> GuardTerms:
    """The guard terms of an eval item (see the module doc)."""
    seen = guard_words(text)
    kept = {w for w in seen if _counted(w.split("#")[0])}
    for match in _CAPITALISED.finditer(text):
        before = text[: match.start()].rstrip()
        if before and before[-1] not in ".!?:;\"'>|([{" and not text[match.start() - 1 : match.start()].isalnum():
            kept.add(match.group().lower())
    return GuardTerms(frozenset(kept), frozenset(w for w in seen if w.startswith("op:")))


def passes_guard(terms: GuardTerms, train_words: set[str]) -> bool:
    """`train_words`: ``guard_words`` of the training text."""
    return terms.words <= train_words and (not terms.ops or not terms.ops.isdisjoint(train_words))


def guard_reason(terms: GuardTerms, train_words: set[str]) -> str | None:
    """Why the guard rejects a pair, in words a reviewer can check (None: it passes)."""
    reasons = []
    missing = sorted(terms.words - train_words)
    numbers = [w.replace("#", " (occurrence ") + (")" if "#" in w else "") for w in missing if w[0].isdigit()]
    names = [w for w in missing if not w[0].isdigit()]
    if numbers:
        reasons.append("numbers of the item missing: " + ", ".join(numbers))
    if names:
        reasons.append("names or units of the item missing: " + ", ".join(names))
    if terms.ops and terms.ops.isdisjoint(train_words):
        reasons.append("no operation of the item's kind (" + ", ".join(sorted(o[3:] for o in terms.ops)) + ")")
    return "; ".join(reasons) or None
