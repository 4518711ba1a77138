"""How the gate reads text: words, numbers, units, operations and content terms, one definition for every stage.

* ``words`` — lowercased alphanumeric tokens (math operators stay tokens; ``1,000`` -> ``1000``; GSM8K ``<<..>>``
  calculator annotations dropped): what the n-gram index hashes and what content terms are made of.
* ``located_words`` — the same tokens with their character offsets, for the report's highlighted spans.
* Number words (``NUMBER_VALUES``, ``fold_numbers``: "twenty-one" -> "21", "a dozen" -> "12"), unit spellings
  (``UNIT_OF``: "km", "kilometres" -> "kilometer") and operation words (``OPERATIONS``: classes add, sub, mul, div,
  rate): the guard (guard.py) and the content terms read them alike.
* ``content_terms`` — ``words`` minus English stopwords, stemmed by a trivial suffix rule, operation words as their
  class (``op:add``), number words as digits, units in one spelling: what lexical candidates (candidates.py) link.
"""

from __future__ import annotations

import re

TOKEN = re.compile(r"[a-z0-9]+|[+*/=%^×÷]|(?<![a-z])-(?=\s*\d)")  # math operators stay tokens
THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
CALCULATOR = re.compile(r"<<[^<>\n]*>>")  # GSM8K's calculator annotations: "<<48/2=24>>24" is "24"


def lowered(text: str) -> str:
    """`text` as the tokenisers read it: calculator annotations dropped, lowercased, thousands separators gone."""
    if "<<" in text:
        text = CALCULATOR.sub(" ", text)
    return THOUSANDS.sub("", text.lower())


def words(text: str) -> list[str]:
    """Lowercased alphanumeric tokens; punctuation and markup are separators (GSM8K ``<<...>>`` annotations
    dropped)."""
    if "<<" in text:
        text = CALCULATOR.sub(" ", text)
    return TOKEN.findall(THOUSANDS.sub("", text.lower()))


def located_words(text: str) -> list[tuple[str, int, int]]:
    """(token, start, end) of every ``words`` token of `text`, offsets into `text` ("1,000" is one token)."""
    low = CALCULATOR.sub(lambda m: " " * len(m.group()), text) if "<<" in text else text
    low = low.lower()
    merged: list[tuple[str, int, int]] = []
    for match in TOKEN.finditer(low):
        token = (match.group(), match.start(), match.end())
        if (
            merged
            and token[0].isdigit()
            and merged[-1][0][-1:].isdigit()
            and len(token[0]) == 3
            and low[merged[-1][2] : token[1]] == ","
        ):
            merged[-1] = (merged[-1][0] + token[0], merged[-1][1], token[2])
        else:
            merged.append(token)
    return merged


def char_spans(bounds: list[tuple[int, int]], hit: set[int]) -> list[tuple[int, int]]:
    """Character spans covering the tokens at the indices in `hit` (`bounds`: each token's (start, end)), adjacent
    tokens joined."""
    spans: list[tuple[int, int]] = []
    for k in sorted(hit):
        if spans and k - 1 in hit:
            spans[-1] = (spans[-1][0], bounds[k][1])
        else:
            spans.append(bounds[k])
    return spans


# Words naming an operation: an eval item's operation class must recur in a match ("43 - 35" is not "43 + 35").
# `rate` gathers the ways of saying "for each one" ("each", "per", "apiece"; "a piece", "an hour": guard.py).
OPERATIONS = {
    "add": {
        "+",
        "plus",
        "sum",
        "add",
        "added",
        "adds",
        "adding",
        "total",
        "more",
        "altogether",
        "combined",
        "increase",
        "increased",
        "increases",
        "increment",
        "incremented",
        "increments",
        "raised",
    },
    "sub": {
        "-",
        "minus",
        "subtract",
        "subtracted",
        "difference",
        "less",
        "left",
        "remain",
        "remaining",
        "remains",
        "fewer",
        "away",
        "sold",
        "gives",
        "gave",
        "lost",
        "spent",
        "decrease",
        "decreased",
        "decreases",
        "decrement",
        "decremented",
        "reduced",
    },
    "mul": {
        "x",
        "*",
        "×",
        "times",
        "multiply",
        "multiplied",
        "product",
        "rows",
        "groups",
        "twice",
        "double",
        "doubled",
        "triple",
        "tripled",
    },
    "div": {"/", "÷", "divide", "divided", "quotient", "split", "share", "shared", "half", "halved"},
    "rate": {"each", "per", "apiece", "every"},
}
# Unit words: every spelling of a unit maps to one term ("km", "kilometres" -> "kilometer")
_UNIT_SPELLINGS = {
    "meter": "meter meters metre metres",
    "centimeter": "centimeter centimeters centimetre centimetres cm cms",
    "kilometer": "kilometer kilometers kilometre kilometres km kms",
    "millimeter": "millimeter millimeters millimetre millimetres mm",
    "gram": "gram grams gramme grammes",
    "kilogram": "kilogram kilograms kg kgs kilo kilos",
    "liter": "liter liters litre litres",
    "milliliter": "milliliter milliliters millilitre millilitres ml",
    "hour": "hour hours hr hrs",
    "minute": "minute minutes min mins",
    "second": "second seconds sec secs",
    "mile": "mile miles",
    "foot": "foot feet ft",
    "inch": "inch inches",
    "pound": "pound pounds lb lbs",
    "ounce": "ounce ounces oz",
    "celsius": "celsius centigrade",
    "fahrenheit": "fahrenheit",
    "day": "day days",
    "week": "week weeks",
    "year": "year years",
    "dollar": "dollar dollars",
}
UNIT_OF = {spelling: unit for unit, spellings in _UNIT_SPELLINGS.items() for spelling in spellings.split()}
UNITS = set(UNIT_OF.values())
# Number words: "one" is 1, "twenty-one" 21, "three hundred" 300, "a dozen" 12
_SMALL = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen".split()
    )
}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
NUMBER_WORDS = frozenset(_SMALL) | frozenset(_TENS) | frozenset(_SCALES) | {"dozen"}
NUMBER_VALUES = {w: str(v) for w, v in {**_SMALL, **_TENS, **_SCALES, "dozen": 12}.items()}  # one word alone


def fold_numbers(tokens: list[str]) -> list[str]:
    """Runs of number words as one digit string ("twenty", "one" -> "21"; "a dozen" -> "12")."""
    out: list[str] = []
    total, current, inside = 0, 0, False
    for token in tokens + [""]:
        if token in _SMALL or token in _TENS:
            current += _SMALL.get(token, 0) + _TENS.get(token, 0)
            inside = True
        elif inside and token in _SCALES:
            total += max(current, 1) * _SCALES[token]
            current = 0
        elif token == "dozen":
            if out and out[-1] == "a" and not inside:
                out.pop()
            total, current, inside = total + max(current, 1) * 12, 0, True
        else:
            if inside:
                out.append(str(total + current))
                total, current, inside = 0, 0, False
            if token:
                out.append(token)
    return out


STOPWORDS = frozenset(
    """
a about above after again against all also am an and any are aren as at be because been before being below between
both but by can cannot could couldn did didn do does doesn doing don down during else ever every few for from
further had hadn has hasn have haven having he her here hers herself him himself his how i if in into is isn it its
itself just let ll me might most much must mustn my myself no nor not now of off on once only or other ought our
ours ourselves out over own re s same shall shan she should shouldn so some such t than that the their theirs them
themselves then there these they this those through to too under until up upon us ve very was wasn we were weren what
when where which while who whom whose why will with won would wouldn you your yours yourself yourselves d m o y ma
get got many please answer question following
""".split()
)
OP_TERMS = {word: f"op:{name}" for name, vocab in OPERATIONS.items() for word in vocab}


def stem(word: str) -> str:
    """Trivial suffix stemmer: enough for "boils"/"boiling", "minutes"/"minute", "cities"/"city"."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "s"):
        if word.endswith(suffix) and not word.endswith("ss") and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def term(token: str) -> str | None:
    """The content term of one ``words()`` token, None for stopwords and other symbols."""
    if token in OP_TERMS:
        return OP_TERMS[token]
    if token in NUMBER_VALUES:  # "four" is the term "4", as the guard reads it
        return NUMBER_VALUES[token]
    if token in UNIT_OF:  # "km" is "kilometer"
        return stem(UNIT_OF[token])
    if token in STOPWORDS or not token[0].isalnum():
        return None
    return stem(token)


def content_terms(text: str) -> list[str]:
    """Content terms of `text`, in order."""
    return [t for t in map(term, words(text)) if t is not None]


def shared_term_spans(text: str, other: str) -> list[tuple[int, int]]:
    """Character spans of the words of `text` whose content term is also one of `other`'s: what an embedding match
    shares with its item, for highlighting."""
    wanted = set(content_terms(other))
    spans: list[tuple[int, int]] = []
    for match in re.finditer(r"[A-Za-z0-9]+", text):
        t = term(match.group().lower())
        if t is not None and t in wanted:
            if spans and text[spans[-1][1] : match.start()].strip() == "":
                spans[-1] = (spans[-1][0], match.end())
            else:
                spans.append((match.start(), match.end()))
    return spans
