"""Contamination gate: find training rows that overlap the test items of a recipe's eval tasks.

Two methods, each reporting (train row, eval item, score) pairs:

* ``ngram`` — word n-grams (lowercased, punctuation stripped, ``1,000`` -> ``1000``). An eval item of m words
  contributes its min(n, m)-grams (GPT-3 style: an item shorter than n must appear whole); items under
  ``MIN_WORDS`` words are left to the embedding method. Eval n-grams are hashed (64-bit polynomial hashes over
  per-word hashes) into one sorted array per length; training rows are hashed chunk by chunk with numpy and looked
  up with ``searchsorted``: O(T log E) for T training and E eval n-grams, never pairwise. Score: the fraction of
  the eval item's n-grams present in the row. Checked text: the whole row (every message, input, chosen/rejected).
* ``embedding`` — all-MiniLM-L6-v2 cosine between the row's prompt (user turns + input, first 128 word pieces) and
  each eval item (Platypus's test-set exclusion, [PL] §2.2). The top ``TOP_K`` eval items of each row are scanned
  best first; the first one at or above the threshold that passes the guard is the match.

Guard (both methods, on by default): every number and unit word in the eval item, its operation class (add, sub, mul,
div words or symbols), and every capitalised word that does not start
a sentence (a named entity), or is an acronym or Roman numeral, must occur in the training text. A copy or paraphrase keeps them; a near miss from
the same template with other numbers or names does not, and MiniLM alone cannot tell "23 plus 58" from "24 plus 59".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

MIN_WORDS = 3
TOP_K = 8
CHUNK_ROWS = 4096
_TOKEN = re.compile(r"[a-z0-9]+|[+*/=%^×÷]|(?<![a-z])-(?=\s*\d)")   # math operators stay tokens
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_CAPITALISED = re.compile(r"\b(?:[A-Z][a-z]+|[A-Z]{2,})\b")   # names, acronyms, Roman numerals
_MASK = (1 << 64) - 1
_PRIME = np.uint64(1099511628211)


def words(text: str) -> list[str]:
    """Lowercased alphanumeric tokens; punctuation and markup are separators."""
    return _TOKEN.findall(_THOUSANDS.sub("", text.lower()))


# Words naming an operation or a unit: an eval item's operation class and units must recur in a match
# ("43 - 35" is not "43 + 35"; "61 hours in minutes" is not "61 minutes in seconds").
OPERATIONS = {
    "add": {"+", "plus", "sum", "add", "added", "adds", "total", "more", "altogether", "combined"},
    "sub": {"-", "minus", "subtract", "subtracted", "difference", "less", "left", "remain", "remaining", "fewer",
            "away", "sold", "gives", "gave", "lost", "spent"},
    "mul": {"x", "*", "×", "times", "multiply", "multiplied", "product", "rows", "each", "groups"},
    "div": {"/", "÷", "divide", "divided", "quotient", "split", "share", "shared", "per"},
}
UNITS = {"meter", "meters", "centimeter", "centimeters", "kilometer", "kilometers", "millimeter", "millimeters",
         "gram", "grams", "kilogram", "kilograms", "liter", "liters", "milliliter", "milliliters", "hour", "hours",
         "minute", "minutes", "second", "seconds", "mile", "miles", "foot", "feet", "inch", "inches", "pound",
         "pounds", "ounce", "ounces", "celsius", "fahrenheit", "day", "days", "week", "weeks", "year", "years"}


def _operations(tokens: set[str]) -> set[str]:
    return {name for name, vocab in OPERATIONS.items() if tokens & vocab}


def guard_words(text: str) -> set[str]:
    """The words of `text`, repeats counted: the second "54" is "54#2", so "54 + 54" needs two 54s to match."""
    seen: dict[str, int] = {}
    out = set()
    for word in words(text):
        seen[word] = seen.get(word, 0) + 1
        out.add(word if seen[word] == 1 else f"{word}#{seen[word]}")
    return out


def guard_terms(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """(numbers and units, named entities) of an eval item: what a copy or paraphrase must keep."""
    tokens = words(text)
    numbers = frozenset(w for w in guard_words(text) if w.split("#")[0].isdigit() or w.split("#")[0] in UNITS)
    numbers |= {f"op:{o}" for o in _operations(set(tokens))}
    entities = set()
    for match in _CAPITALISED.finditer(text):
        before = text[:match.start()].rstrip()
        if before and before[-1] not in ".!?:;\"'>|([{" and not text[match.start() - 1:match.start()].isalnum():
            entities.add(match.group().lower())
    return numbers, frozenset(entities)


def passes_guard(terms: tuple[frozenset[str], frozenset[str]], train_words: set[str]) -> bool:
    numbers, entities = terms
    ops = {t for t in numbers if t.startswith("op:")}
    if ops and not ({f"op:{o}" for o in _operations(train_words)} & ops):
        return False
    return (numbers - ops) <= train_words and entities <= train_words


def _word_hashes(tokens: Sequence[str], cache: dict[str, int]) -> np.ndarray:
    out = np.empty(len(tokens), dtype=np.uint64)
    for i, token in enumerate(tokens):
        value = cache.get(token)
        if value is None:
            value = cache[token] = (hash(token) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK
        out[i] = value
    return out


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

    def query(self, texts: Sequence[str]) -> list[tuple[int, int, float]]:
        """(text index, best eval item, fraction of its n-grams found) for every text with a hit."""
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
                same_row = row_of[:len(grams)] == row_of[length - 1:]
                pos = np.searchsorted(keys, grams).clip(max=len(keys) - 1)
                hit = same_row & (keys[pos] == grams)
                if hit.any():
                    pairs.append(np.stack([row_of[:len(grams)][hit], owners[pos[hit]], grams[hit].view(np.int64)], 1))
            if not pairs:
                continue
            # count distinct matched n-grams per (row, item), keep each row's best item
            triples = np.unique(np.concatenate(pairs), axis=0)
            pair_keys, counts = np.unique(triples[:, :2], axis=0, return_counts=True)
            scores = counts / np.maximum(self.total[pair_keys[:, 1]], 1)
            best: dict[int, tuple[int, float]] = {}
            for (row, item), score in zip(pair_keys.tolist(), scores.tolist()):
                if row not in best or score > best[row][1]:
                    best[row] = (item, score)
            found.extend((start + row, item, score) for row, (item, score) in sorted(best.items()))
        return found


def ngram_matches(train_texts: Sequence[str], eval_texts: Sequence[str], n: int = 13,
                  guard: bool = True) -> list[tuple[int, int, float]]:
    """(train index, eval index, score) for training texts that share an n-gram with an eval item."""
    terms = [guard_terms(t) for t in eval_texts] if guard else None
    out = []
    for row, item, score in NgramIndex(eval_texts, n).query(train_texts):
        if terms is None or passes_guard(terms[item], guard_words(train_texts[row])):
            out.append((row, item, score))
    return out


def embedding_matches(train_prompts: Sequence[str], eval_texts: Sequence[str], threshold: float = 0.8,
                      guard: bool = True, max_tokens: int = 128,
                      vectors: tuple[np.ndarray, np.ndarray] | None = None) -> list[tuple[int, int, float]]:
    """(train index, eval index, cosine) for prompts within `threshold` cosine of an eval item (MiniLM)."""
    from menagerie.data.embeddings import encode

    train_vec, eval_vec = vectors or (encode(train_prompts, max_tokens=max_tokens),
                                      encode(eval_texts, max_tokens=max_tokens))
    if len(train_vec) == 0 or len(eval_vec) == 0:
        return []
    terms = [guard_terms(t) for t in eval_texts] if guard else None
    k = min(TOP_K, len(eval_vec))
    keys_t = np.ascontiguousarray(eval_vec.T)
    out = []
    for start in range(0, len(train_vec), CHUNK_ROWS):
        sims = train_vec[start:start + CHUNK_ROWS] @ keys_t
        for r in np.nonzero(sims.max(axis=1) >= threshold)[0].tolist():
            top = np.argpartition(-sims[r], k - 1)[:k]
            row_words = guard_words(train_prompts[start + r]) if guard else None
            for item in top[np.argsort(-sims[r, top])].tolist():
                if sims[r, item] < threshold:
                    break
                if terms is None or passes_guard(terms[item], row_words):
                    out.append((start + r, item, float(sims[r, item])))
                    break
    return out
