"""Contamination gate: find training rows that overlap the test items of a recipe's eval tasks.

Two methods, each reporting (train row, eval item, score) pairs:

* ``ngram`` — word n-grams (lowercased, punctuation stripped, ``1,000`` -> ``1000``, GSM8K ``<<..>>`` annotations
  dropped). An eval item of m words contributes its min(n, m)-grams (GPT-3 style: an item shorter than n must appear
  whole); items under ``MIN_WORDS`` words are left to the embedding method. Eval n-grams are hashed (64-bit
  polynomial hashes over per-word hashes) into one sorted array per length; training rows are hashed chunk by chunk
  with numpy, a bitmap of the eval hashes' low bits drops most of their n-grams, and the rest are looked up with
  ``searchsorted``: O(T) plus O(t log E) for T training n-grams, t of them past the bitmap and E eval n-grams, never
  pairwise. Score: the fraction of the eval item's n-grams present in the row; a pair counts from `min_overlap` up
  (the recipe's ``ngram_min_overlap``). Checked text: the whole row (every message, input, chosen/rejected). The
  gate indexes questions and text answers here; code answers go to menagerie/data/code_match.py.
* ``embedding`` — all-MiniLM-L6-v2 cosine between the row's prompt (user turns + input) and each eval item
  (Platypus's test-set exclusion, [PL] §2.2), computed for lexical candidates only (``lexical_candidates``,
  menagerie/data/candidates.py): pairs sharing enough of the item's content-word links, checked in the best window
  of the prompt, at most ``TOP_K`` per row. The candidate's window (the whole prompt when it is short, as before;
  the sentence around the match in a long one) is embedded, first 128 word pieces. A row's match is its best candidate
  at or above the threshold. Rows without candidates are never embedded.

Both methods' row-wise work runs in `workers` forked processes over contiguous row ranges (menagerie/data/shards.py);
the results do not depend on the number of workers.

Guard (both methods, on by default): every number and unit in the eval item, its operation class (add, sub, mul,
div, rate words or symbols), and every capitalised word that does not start a sentence (a named entity), or is an
acronym or Roman numeral, must occur in the training text. It reads meaning, not spelling (``guard_words``): number
words are digits ("one" = 1, "twenty-one" = 21, "a dozen" = 12), every spelling of a unit is one term ("km",
"kilometres" = kilometer; "$20" holds a dollar; "mph" = mile per hour), "each", "per", "apiece", "every", "a piece",
"an hour" are one rate class, "increased"/"incremented" one add class. A copy or paraphrase keeps them; a near miss
from the same template with other numbers or names does not, and MiniLM alone cannot tell "23 plus 58" from "24 plus
59". ``guard_reason`` says what a vetoed pair lacks; the vetoes that scored above a threshold are kept for review.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from menagerie.data.candidates import LexicalIndex

MIN_WORDS = 3
TOP_K = 8
CHUNK_ROWS = 4096
_TOKEN = re.compile(r"[a-z0-9]+|[+*/=%^×÷]|(?<![a-z])-(?=\s*\d)")   # math operators stay tokens
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_CAPITALISED = re.compile(r"\b(?:[A-Z][a-z]+|[A-Z]{2,})\b")   # names, acronyms, Roman numerals
_MASK = (1 << 64) - 1
_PRIME = np.uint64(1099511628211)


_CALCULATOR = re.compile(r"<<[^<>\n]*>>")   # GSM8K's calculator annotations: "<<48/2=24>>24" is "24"


def words(text: str) -> list[str]:
    """Lowercased alphanumeric tokens; punctuation and markup are separators (GSM8K ``<<...>>`` annotations
    dropped)."""
    if "<<" in text:
        text = _CALCULATOR.sub(" ", text)
    return _TOKEN.findall(_THOUSANDS.sub("", text.lower()))


# Words naming an operation: an eval item's operation class must recur in a match ("43 - 35" is not "43 + 35").
# `rate` gathers the ways of saying "for each one" ("each", "per", "apiece", "a piece", "an hour": _RATE_PHRASE).
OPERATIONS = {
    "add": {"+", "plus", "sum", "add", "added", "adds", "adding", "total", "more", "altogether", "combined",
            "increase", "increased", "increases", "increment", "incremented", "increments", "raised"},
    "sub": {"-", "minus", "subtract", "subtracted", "difference", "less", "left", "remain", "remaining", "remains",
            "fewer", "away", "sold", "gives", "gave", "lost", "spent", "decrease", "decreased", "decreases",
            "decrement", "decremented", "reduced"},
    "mul": {"x", "*", "×", "times", "multiply", "multiplied", "product", "rows", "groups", "twice", "double",
            "doubled", "triple", "tripled"},
    "div": {"/", "÷", "divide", "divided", "quotient", "split", "share", "shared", "half", "halved"},
    "rate": {"each", "per", "apiece", "every"},
}
# Unit words: every spelling of a unit maps to one guard term ("km", "kilometres" -> "kilometer"), whose repeats
# count ("61 hours in minutes" is not "61 minutes in seconds").
_UNIT_SPELLINGS = {
    "meter": "meter meters metre metres", "centimeter": "centimeter centimeters centimetre centimetres cm cms",
    "kilometer": "kilometer kilometers kilometre kilometres km kms", "millimeter": "millimeter millimeters "
    "millimetre millimetres mm", "gram": "gram grams gramme grammes", "kilogram": "kilogram kilograms kg kgs kilo "
    "kilos", "liter": "liter liters litre litres", "milliliter": "milliliter milliliters millilitre millilitres ml",
    "hour": "hour hours hr hrs", "minute": "minute minutes min mins", "second": "second seconds sec secs",
    "mile": "mile miles", "foot": "foot feet ft", "inch": "inch inches", "pound": "pound pounds lb lbs",
    "ounce": "ounce ounces oz", "celsius": "celsius centigrade", "fahrenheit": "fahrenheit", "day": "day days",
    "week": "week weeks", "year": "year years", "dollar": "dollar dollars",
}
UNIT_OF = {spelling: unit for unit, spellings in _UNIT_SPELLINGS.items() for spelling in spellings.split()}
UNITS = set(UNIT_OF.values())
_SPEEDS = {"mph": ("mile", "per", "hour"), "kph": ("kilometer", "per", "hour"), "kmh": ("kilometer", "per", "hour")}
_RATE_PHRASE = re.compile(r"\b(?:a|an)\s+(?:piece|head|hour|day|week|month|year|minute|second|person|unit|item)\b")
# Number words: "one" is 1, "twenty-one" 21, "three hundred" 300, "a dozen" 12
_SMALL = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                     "fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_NUMBER_WORDS = frozenset(_SMALL) | frozenset(_TENS) | frozenset(_SCALES) | {"dozen"}
NUMBER_VALUES = {w: str(v) for w, v in {**_SMALL, **_TENS, **_SCALES, "dozen": 12}.items()}   # one word alone


def _fold_numbers(tokens: list[str]) -> list[str]:
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


def _counted(word: str) -> bool:
    """Words whose repeats the guard counts: numbers and units ("54 + 54" needs two 54s)."""
    return word.isdigit() or word in UNITS


def guard_words(text: str) -> set[str]:
    """What the guard reads of `text`: its words with number words as digits, units in one spelling, repeats of
    numbers and units counted (the second "54" is "54#2"), and its operation classes as ``op:<class>``."""
    low = _THOUSANDS.sub("", (_CALCULATOR.sub(" ", text) if "<<" in text else text).lower())
    tokens = _TOKEN.findall(low)
    if not _NUMBER_WORDS.isdisjoint(tokens):
        tokens = _fold_numbers(tokens)
    if not _SPEEDS.keys().isdisjoint(tokens):
        tokens = [part for t in tokens for part in _SPEEDS.get(t, (t,))]
    counts = Counter([UNIT_OF.get(t, t) for t in tokens])
    if "$" in low:   # "$20" is "20 dollars"
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
    words: frozenset[str]   # its numbers and units (repeats marked, see guard_words) and named entities, all of them
    ops: frozenset[str]     # its operation classes (op:add, op:sub, op:mul, op:div, op:rate): at least one of them


def guard_terms(text: str) -> GuardTerms:
    """The guard terms of an eval item (see the module doc)."""
    seen = guard_words(text)
    kept = {w for w in seen if _counted(w.split("#")[0])}
    for match in _CAPITALISED.finditer(text):
        before = text[:match.start()].rstrip()
        if before and before[-1] not in ".!?:;\"'>|([{" and not text[match.start() - 1:match.start()].isalnum():
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


def memoised(tokens: Sequence[str], cache: dict, compute: Callable[[str], int]) -> list[int]:
    """`compute(token)` for every token, kept in `cache`: one C-level lookup pass over the tokens; only words not
    seen before take the Python branch (the n-gram hashes here, the candidate terms in candidates.py)."""
    values = list(map(cache.get, tokens))
    if None in values:
        for i, value in enumerate(values):
            if value is None:
                token = tokens[i]
                value = cache.get(token)
                if value is None:
                    value = cache[token] = compute(token)
                values[i] = value
    return values


def _word_hash(token: str) -> int:
    return (hash(token) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK


def _word_hashes(tokens: Sequence[str], cache: dict[str, int]) -> np.ndarray:
    return np.array(memoised(tokens, cache, _word_hash), dtype=np.uint64)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for each (s, n), vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return offsets + np.arange(total, dtype=np.int64)


def _rolling(hashes: np.ndarray, lengths: Sequence[int]) -> dict[int, np.ndarray]:
    """Polynomial hashes of every window of each length in `lengths` (uint64 arithmetic wraps)."""
    out, current = {}, hashes.copy()
    with np.errstate(over="ignore"):
        for length in range(1, max(lengths) + 1):
            if length > 1:
                current = current[:-1] * _PRIME + hashes[length - 1:]
            if length in lengths:
                out[length] = current ^ np.uint64(length * 0x2545F4914F6CDD1D & _MASK)
    return out


class NgramIndex:
    """Hashed n-grams of the eval items, one sorted array per window length."""

    def __init__(self, eval_texts: Sequence[str], n: int = 13):
        self.n, self.cache = n, {}
        per_length: dict[int, list[tuple[np.ndarray, int]]] = {}
        self.total = np.zeros(len(eval_texts), dtype=np.int64)
        for item, text in enumerate(eval_texts):
            tokens = words(text)
            if len(tokens) < MIN_WORDS:
                continue
            length = min(n, len(tokens))
            grams = np.unique(_rolling(_word_hashes(tokens, self.cache), [length])[length])
            per_length.setdefault(length, []).append((grams, item))
            self.total[item] = len(grams)
        self.tables = {}
        for length, parts in per_length.items():
            keys = np.concatenate([g for g, _ in parts])
            owners = np.concatenate([np.full(len(g), i, dtype=np.int64) for g, i in parts])
            order = np.argsort(keys, kind="stable")
            self.tables[length] = (keys[order], owners[order])
        # per length, a bitmap of the keys' low bits: most of a row's n-grams are no item's and are dropped by one
        # array lookup instead of a binary search (a few percent of false positives go on to the search)
        self.filters = {}
        for length, (keys, _) in self.tables.items():
            bits = int(min(24, max(12, np.ceil(np.log2(len(keys) * 16)))))
            bitmap = np.zeros(1 << bits, dtype=bool)
            bitmap[keys & np.uint64((1 << bits) - 1)] = True
            self.filters[length] = (bitmap, np.uint64((1 << bits) - 1))

    def query(self, texts: Sequence[str], min_score: float = 0.0,
              best_only: bool = True) -> list[tuple[int, int, float]]:
        """(text index, eval item, fraction of its n-grams found) for every text with a hit at or above
        `min_score`: its best item, or (`best_only` False) every such item, best first."""
        found = []
        if not self.tables:
            return found
        lengths = sorted(self.tables)
        for start in range(0, len(texts), CHUNK_ROWS):
            tokens = [words(t) for t in texts[start:start + CHUNK_ROWS]]
            flat = [w for row in tokens for w in row]
            if not flat:
                continue
            hashes = _word_hashes(flat, self.cache)
            row_of = np.repeat(np.arange(len(tokens)), [len(r) for r in tokens])
            pairs = []
            for length, grams in _rolling(hashes, lengths).items():
                keys, owners = self.tables[length]
                bitmap, mask = self.filters[length]
                maybe = np.flatnonzero(bitmap[grams & mask])
                maybe = maybe[row_of[maybe] == row_of[maybe + length - 1]]   # the n-gram lies inside one row
                pos = np.searchsorted(keys, grams[maybe]).clip(max=len(keys) - 1)
                hit = keys[pos] == grams[maybe]
                if hit.any():   # an n-gram several items share (a template) counts for each of them
                    matched, first = grams[maybe[hit]], pos[hit]
                    count = np.searchsorted(keys, matched, side="right") - first
                    pairs.append(np.stack([np.repeat(row_of[maybe[hit]], count),
                                           owners[_ranges(first, count)],
                                           np.repeat(matched.view(np.int64), count)], 1))
            if not pairs:
                continue
            # count distinct matched n-grams per (row, item); keep those at or above min_score, best first per row
            triples = np.unique(np.concatenate(pairs), axis=0)
            pair_keys, counts = np.unique(triples[:, :2], axis=0, return_counts=True)
            scores = counts / np.maximum(self.total[pair_keys[:, 1]], 1)
            keep = scores >= min_score - 1e-9
            pair_keys, scores = pair_keys[keep], scores[keep]
            order = np.lexsort((pair_keys[:, 1], -scores, pair_keys[:, 0]))
            last_row = -1
            for (row, item), score in zip(pair_keys[order].tolist(), scores[order].tolist()):
                if best_only and row == last_row:
                    continue
                found.append((start + row, item, score))
                last_row = row
        return found


def _no_phases(name: str) -> AbstractContextManager:
    return nullcontext()


def ngram_matches(train_texts: Sequence[str], eval_texts: Sequence[str], n: int = 13,
                  guard: bool = True, terms: Sequence | None = None,
                  phase: Callable[[str], AbstractContextManager] = _no_phases,
                  workers: int = 1, min_overlap: float = 0.0, top: int = 1,
                  vetoed: list | None = None) -> list[tuple[int, int, float]]:
    """(train index, eval index, score) for training texts holding at least `min_overlap` of an eval item's
    n-grams (and at least one), the `top` best items per row that pass the guard.

    `terms`: the eval items' ``guard_terms``, when the caller has them already; `phase(name)` wraps each step;
    `workers`: processes for the lookups; `vetoed`: receives (train index, eval index, score, reason) for each
    pair the guard rejected."""
    from menagerie.data.shards import map_shards

    with phase("index"):
        if guard and terms is None:
            terms = [guard_terms(t) for t in eval_texts]
        index = NgramIndex(eval_texts, n)
    with phase("query"):
        def lookup(lo: int, hi: int) -> list[tuple[int, int, float]]:
            return [(lo + row, item, score)
                    for row, item, score in index.query(train_texts[lo:hi], min_overlap, best_only=not guard)]

        hits = [hit for part in map_shards(lookup, len(train_texts), workers) for hit in part]
    with phase("guard"):
        out, kept, current, seen = [], 0, -1, None
        for row, item, score in hits:
            if row != current:
                current, kept, seen = row, 0, guard_words(train_texts[row]) if guard else None
            if kept >= top:
                continue
            if guard and not passes_guard(terms[item], seen):
                if vetoed is not None:
                    vetoed.append((row, item, score, guard_reason(terms[item], seen)))
                continue
            out.append((row, item, score))
            kept += 1
        return out


def ngram_spans(train_text: str, eval_text: str, n: int = 13) -> tuple[list[tuple[int, int]],
                                                                       list[tuple[int, int]], int, int]:
    """Where an eval item's n-grams (as ``NgramIndex`` forms them) occur in a training text: (character spans in the
    training text, in the item, n-grams matched, the item's n-grams). For the report; one pair at a time."""
    def located(text: str) -> list[tuple[str, int, int]]:
        low = _CALCULATOR.sub(lambda m: " " * len(m.group()), text) if "<<" in text else text
        low = low.lower()
        out = []
        for match in _TOKEN.finditer(low):
            out.append((match.group(), match.start(), match.end()))
        merged = []   # "1,000" is one word, as words() reads it
        for token in out:
            if (merged and token[0].isdigit() and merged[-1][0][-1:].isdigit() and len(token[0]) == 3
                    and low[merged[-1][2]:token[1]] == ","):
                merged[-1] = (merged[-1][0] + token[0], merged[-1][1], token[2])
            else:
                merged.append(token)
        return merged

    train, item = located(train_text), located(eval_text)
    length = min(n, len(item))
    if length == 0:
        return [], [], 0, 0
    grams = {tuple(t[0] for t in item[k:k + length]): k for k in range(len(item) - length + 1)}
    train_hit, item_hit, matched = set(), set(), set()
    for k in range(len(train) - length + 1):
        gram = tuple(t[0] for t in train[k:k + length])
        if gram in grams:
            matched.add(gram)
            train_hit.update(range(k, k + length))
            item_hit.update(range(grams[gram], grams[gram] + length))
    return _spans(train, train_hit), _spans(item, item_hit), len(matched), len(grams)


def _spans(tokens: list[tuple[str, int, int]], hit: set[int]) -> list[tuple[int, int]]:
    """Character spans covering the tokens at the indices in `hit`, adjacent tokens joined."""
    spans: list[tuple[int, int]] = []
    for k in sorted(hit):
        if spans and k - 1 in hit:
            spans[-1] = (spans[-1][0], tokens[k][2])
        else:
            spans.append((tokens[k][1], tokens[k][2]))
    return spans


def lexical_candidates(train_prompts: Sequence[str], eval_texts: Sequence[str], guard: bool = True,
                       terms: Sequence | None = None, stats: dict | None = None,
                       phase: Callable[[str], AbstractContextManager] = _no_phases, workers: int = 1,
                       vetoed: list | None = None) -> list[tuple[float, int, int, str]]:
    """The pairs the embedding method embeds: (-rank, train index, eval index, window text), best first per row.

    A pair qualifies when the row holds at least ``MIN_LINK_FRACTION`` of the item's term links, its best window
    holds at least ``MIN_CONTAINMENT`` of the item's term weight and (with `guard`) the prompt and the window pass the
    guard; a row keeps its ``TOP_K`` best. Rank: window containment x window density (share of its content terms
    that are the item's) x the summed rarity (log inverse row frequency) of the item's terms in it, so a dense,
    specific match ranks above common words scattered in a long text. See candidates.py. Two passes over the rows,
    each in `workers` processes: link candidates and term row frequencies, then (with the rarities of all rows)
    the windows.

    `vetoed`: receives (-rank, train index, eval index, window, reason) for the pairs the guard rejected among
    those holding at least ``REVIEW_LINK_FRACTION`` of the item's links (a near copy, in words), ``REVIEW_K`` a
    row: what the report's `reviewed` list is made of.
    """
    from menagerie.data.candidates import LexicalIndex
    from menagerie.data.shards import map_shards

    stats = {} if stats is None else stats
    with phase("index"):
        index = LexicalIndex(eval_texts)
        if guard and terms is None:
            terms = [guard_terms(t) for t in eval_texts]
    with phase("candidates"):
        def propose(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
            counts: dict = {}
            rows, items, fractions, row_df = index.candidates(train_prompts[lo:hi], stats=counts)
            return lo + rows, items, fractions, row_df, counts.get("link_hits", 0)

        parts = map_shards(propose, len(train_prompts), workers)
        rows = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        items = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
        fractions = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.float64)
        row_df = sum((p[3] for p in parts), np.zeros(index.size, np.int64))
        stats["link_hits"] = stats.get("link_hits", 0) + sum(p[4] for p in parts)
    with phase("verify"):
        order = np.lexsort((items, rows))
        rows, items, fractions = rows[order], items[order], fractions[order]
        idf = np.log((len(train_prompts) + 1) / (row_df + 1))   # how rare each term is in these rows
        review = vetoed is not None and guard

        def check(lo: int, hi: int) -> tuple[list, list]:
            a, b = np.searchsorted(rows, [lo, hi])
            return _verify(index, train_prompts, rows[a:b].tolist(), items[a:b].tolist(),
                           fractions[a:b].tolist(), idf, terms if guard else None, review)

        results = map_shards(check, len(train_prompts), workers)
        verified = [v for part, _ in results for v in part]
        if vetoed is not None:
            vetoed.extend(v for _, part in results for v in part)
        stats.update(skipped_items=index.skipped, candidate_pairs=len(rows), verified_pairs=len(verified),
                     rows_with_candidates=len({v[1] for v in verified}))
    return verified


REVIEW_LINK_FRACTION = 0.25   # a guard veto is reviewed when the row holds this share of the item's links
REVIEW_K = 2                  # ... at most this many a row, most links first


def _verify(index: LexicalIndex, prompts: Sequence[str], rows: list[int], items: list[int], fractions: list[float],
            idf: np.ndarray, terms: Sequence | None, review: bool = False) -> tuple[list, list]:
    """`lexical_candidates`' window check of (row, item) pairs sorted by row: each row's ``TOP_K`` best, and (with
    `review`) its windows of the ``REVIEW_K`` guard vetoes holding the most of their item's links (at least
    ``REVIEW_LINK_FRACTION``): a bounded extra cost, two windows a row at most."""
    from menagerie.data.candidates import MIN_CONTAINMENT

    verified: list[tuple[float, int, int, str]] = []
    vetoed: list[tuple[float, int, int, str, str]] = []

    def windowed(row: int, item: int, occurrences: tuple) -> tuple[float, str] | None:
        window, containment, matched, density = index.window(prompts[row], item, occurrences)
        if containment < MIN_CONTAINMENT - 1e-9:
            return None
        return -containment * density * float(idf[matched].sum()), window

    def flush(row: int, passed: list[int], refused: list[tuple[float, int]]) -> None:
        prompt, occurrences, row_words = prompts[row], None, None
        kept: list[tuple[float, int, int, str]] = []
        if terms is not None and (passed or refused):
            row_words = guard_words(prompt)
        for item in passed:
            if terms is not None and not passes_guard(terms[item], row_words):
                if review and fractions_of[item] >= REVIEW_LINK_FRACTION - 1e-9:
                    refused.append((-fractions_of[item], item))
                continue
            occurrences = occurrences or index.occurrences(prompt)
            found = windowed(row, item, occurrences)
            if found is None:
                continue
            rank, window = found
            if terms is not None and window is not prompt and not passes_guard(terms[item], guard_words(window)):
                if review and fractions_of[item] >= REVIEW_LINK_FRACTION - 1e-9:
                    refused.append((-fractions_of[item], item))
                continue
            kept.append((rank, row, item, window))
        verified.extend(sorted(kept)[:TOP_K])
        for _, item in sorted(refused)[:REVIEW_K]:
            occurrences = occurrences or index.occurrences(prompt)
            found = windowed(row, item, occurrences)
            if found is not None:
                rank, window = found
                reason = guard_reason(terms[item], guard_words(window)) or guard_reason(terms[item], row_words)
                vetoed.append((rank, row, item, window, reason or "guard"))

    fractions_of: dict[int, float] = {}
    current, pending = None, []
    for row, item, fraction in zip(rows, items, fractions):
        if row != current:
            if current is not None:
                flush(current, pending, [])
            current, pending, fractions_of = row, [], {}
        pending.append(item)
        fractions_of[item] = fraction
    if current is not None:
        flush(current, pending, [])
    return verified, vetoed


def embedding_matches(train_prompts: Sequence[str], eval_texts: Sequence[str], threshold: float = 0.8,
                      guard: bool = True, max_tokens: int = 128, terms: Sequence | None = None,
                      max_pairs: int | None = None, cache_dir: str | None = None, stats: dict | None = None,
                      phase: Callable[[str], AbstractContextManager] = _no_phases,
                      workers: int = 1) -> list[tuple[int, int, float]]:
    """(train index, eval index, cosine) for prompts within `threshold` cosine of an eval item (MiniLM): the
    `lexical_candidates` of the prompts (`workers` processes), scored by `score_candidates`."""
    stats = {} if stats is None else stats
    candidates = lexical_candidates(train_prompts, eval_texts, guard, terms, stats, phase, workers)
    return score_candidates(candidates, eval_texts, threshold, max_tokens, max_pairs, cache_dir, stats, phase)


def score_candidates(candidates: list[tuple[float, int, int, str]], eval_texts: Sequence[str],
                     threshold: float = 0.8, max_tokens: int = 128, max_pairs: int | None = None,
                     cache_dir: str | None = None, stats: dict | None = None,
                     phase: Callable[[str], AbstractContextManager] = _no_phases,
                     vetoed: Sequence | None = None, reviewed: list | None = None) -> list[tuple[int, int, float]]:
    """Embed `lexical_candidates`' pairs: each candidate's window once, each candidate item once (`cache_dir`: item
    vectors kept by content hash across runs); a row's match is its best candidate at or above `threshold`.

    With `max_pairs`, only that many candidates are embedded, best ranked first, and the rest are counted in
    ``stats["unchecked_pairs"]``. `stats` receives the counts; `phase(name)` wraps each step. `vetoed`: the guard's
    vetoes from `lexical_candidates` (at most `max_pairs` of them embedded too, best ranked first); those at or above
    `threshold` go to `reviewed` as (train index, eval index, cosine, window, reason).
    """
    from menagerie.data.embeddings import encode, encode_cached

    stats = {} if stats is None else stats
    checked = sorted(candidates)[:max_pairs] if max_pairs is not None else candidates
    stats["unchecked_pairs"] = len(candidates) - len(checked)
    review = sorted(vetoed or [])[:max_pairs] if max_pairs is not None else list(vetoed or [])
    with phase("embed"):
        windows = list(dict.fromkeys([v[3] for v in checked] + [v[3] for v in review]))
        wanted = sorted({v[2] for v in checked} | {v[2] for v in review})
        window_vec = encode(windows, max_tokens=max_tokens)
        cached: dict = {}
        item_vec = encode_cached([eval_texts[i] for i in wanted], max_tokens=max_tokens, cache_dir=cache_dir,
                                 stats=cached)
        stats.update(embedded_pairs=len(checked), embedded_windows=len(windows), embedded_items=len(wanted),
                     items_from_cache=cached.get("cache_hits", 0))
        if vetoed is not None:
            stats["embedded_vetoes"] = len(review)
    with phase("score"):
        window_at = {w: k for k, w in enumerate(windows)}
        item_at = {i: k for k, i in enumerate(wanted)}
        best: dict[int, tuple[float, int]] = {}
        for _, row, item, window in checked:
            cosine = float(window_vec[window_at[window]] @ item_vec[item_at[item]])
            if cosine >= threshold and (row not in best or cosine > best[row][0]):
                best[row] = (cosine, item)
        for _, row, item, window, reason in review:
            cosine = float(window_vec[window_at[window]] @ item_vec[item_at[item]])
            if cosine >= threshold and reviewed is not None:
                reviewed.append((row, item, cosine, window, reason))
    return [(row, item, cosine) for row, (cosine, item) in sorted(best.items())]
