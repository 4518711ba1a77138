"""The n-gram method: training rows holding an eval item's word n-grams.

Word n-grams of ``words()`` tokens (text.py: lowercased, punctuation stripped, ``1,000`` -> ``1000``, GSM8K
``<<..>>`` annotations dropped). An eval item of m words contributes its min(n, m)-grams (GPT-3 style: an item
shorter than n must appear whole); items under ``MIN_WORDS`` words are left to the embedding method. Eval n-grams
are hashed (64-bit polynomial hashes over per-word hashes) into one sorted array per length; training rows are
hashed chunk by chunk with numpy, a bitmap of the eval hashes' low bits drops most of their n-grams, and the rest are
looked up with ``searchsorted``: O(T) plus O(t log E) for T training n-grams, t of them past the bitmap and E eval
n-grams, never pairwise. Score: the fraction of the eval item's n-grams present in the row; a pair counts from
`min_overlap` up (the recipe's ``ngram_min_overlap``). Checked text: the whole row (every message, input,
chosen/rejected). The gate indexes questions and text answers here; code answers go to code_match.py.

The lookups run in `workers` forked processes over contiguous row ranges (shards.py); the results do not depend on
the number of workers. Then the guard (guard.py) checks each row's best pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from menagerie.data.contamination.arrays import CHUNK_ROWS, MASK, PRIME, concat_ranges, memoised, token_hash
from menagerie.data.contamination.guard import GuardTerms, guard_reason, guard_terms, guard_words, passes_guard
from menagerie.data.contamination.records import Match, Run
from menagerie.data.contamination.shards import map_shards
from menagerie.data.contamination.text import char_spans, located_words, words

MIN_WORDS = 3


def _word_hashes(tokens: Sequence[str], cache: dict[str, int]) -> np.ndarray:
    return np.array(memoised(tokens, cache, token_hash), dtype=np.uint64)


def _rolling(hashes: np.ndarray, lengths: Sequence[int]) -> dict[int, np.ndarray]:
    """Polynomial hashes of every window of each length in `lengths` (uint64 arithmetic wraps)."""
    out: dict[int, np.ndarray] = {}
    current = hashes.copy()
    with np.errstate(over="ignore"):
        for length in range(1, max(lengths) + 1):
            if length > 1:
                current = current[:-1] * PRIME + hashes[length - 1 :]
            if length in lengths:
                out[length] = current ^ np.uint64(length * 0x2545F4914F6CDD1D & MASK)
    return out


class NgramIndex:
    """Hashed n-grams of the eval items, one sorted array per window length."""

    def __init__(self, eval_texts: Sequence[str], n: int = 13):
        self.n = n
        self.cache: dict[str, int] = {}
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
        self.tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for length, parts in per_length.items():
            keys = np.concatenate([g for g, _ in parts])
            owners = np.concatenate([np.full(len(g), i, dtype=np.int64) for g, i in parts])
            order = np.argsort(keys, kind="stable")
            self.tables[length] = (keys[order], owners[order])
        # per length, a bitmap of the keys' low bits: most of a row's n-grams are no item's and are dropped by one
        # array lookup instead of a binary search (a few percent of false positives go on to the search)
        self.filters: dict[int, tuple[np.ndarray, np.uint64]] = {}
        for length, (keys, _) in self.tables.items():
            bits = int(min(24, max(12, np.ceil(np.log2(len(keys) * 16)))))
            bitmap = np.zeros(1 << bits, dtype=bool)
            bitmap[keys & np.uint64((1 << bits) - 1)] = True
            self.filters[length] = (bitmap, np.uint64((1 << bits) - 1))

    def query(
        self, texts: Sequence[str], min_score: float = 0.0, best_only: bool = True
    ) -> list[tuple[int, int, float]]:
        """(text index, eval item, fraction of its n-grams found) for every text with a hit at or above
        `min_score`: its best item, or (`best_only` False) every such item, best first."""
        found: list[tuple[int, int, float]] = []
        if not self.tables:
            return found
        lengths = sorted(self.tables)
        for start in range(0, len(texts), CHUNK_ROWS):
            tokens = [words(t) for t in texts[start : start + CHUNK_ROWS]]
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
                maybe = maybe[row_of[maybe] == row_of[maybe + length - 1]]  # the n-gram lies inside one row
                pos = np.searchsorted(keys, grams[maybe]).clip(max=len(keys) - 1)
                hit = keys[pos] == grams[maybe]
                if hit.any():  # an n-gram several items share (a template) counts for each of them
                    matched, first = grams[maybe[hit]], pos[hit]
                    count = np.searchsorted(keys, matched, side="right") - first
                    pairs.append(
                        np.stack(
                            [
                                np.repeat(row_of[maybe[hit]], count),
                                owners[concat_ranges(first, count)],
                                np.repeat(matched.view(np.int64), count),
                            ],
                            1,
                        )
                    )
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


def ngram_matches(
    train_texts: Sequence[str],
    eval_texts: Sequence[str],
    n: int = 13,
    guard: bool = True,
    terms: Sequence[GuardTerms] | None = None,
    run: Run | None = None,
    workers: int = 1,
    min_overlap: float = 0.0,
    top: int = 1,
    vetoed: list[Match] | None = None,
) -> list[Match]:
    """Training texts holding at least `min_overlap` of an eval item's n-grams (and at least one): the `top` best
    items per row that pass the guard, as `Match`es (score: the share of the item's n-grams), by row.

    `terms`: the eval items' ``guard_terms``, when the caller has them already; `run`: gets the timings of the
    steps (index, query, guard); `workers`: processes for the lookups; `vetoed`: receives the pairs the guard
    rejected, each with its reason."""
    run = Run() if run is None else run
    with run.phase("index"):
        if guard and terms is None:
            terms = [guard_terms(t) for t in eval_texts]
        index = NgramIndex(eval_texts, n)
    with run.phase("query"):

        def lookup(lo: int, hi: int) -> list[tuple[int, int, float]]:
            return [
                (lo + row, item, score)
                for row, item, score in index.query(train_texts[lo:hi], min_overlap, best_only=not guard)
            ]

        hits = [hit for part in map_shards(lookup, len(train_texts), workers) for hit in part]
    with run.phase("guard"):
        out: list[Match] = []
        kept, current, seen = 0, -1, set()
        for row, item, score in hits:
            if row != current:
                current, kept, seen = row, 0, guard_words(train_texts[row]) if guard else set()
            if kept >= top:
                continue
            if terms is not None and guard and not passes_guard(terms[item], seen):
                if vetoed is not None:
                    vetoed.append(Match(row, item, score, reason=guard_reason(terms[item], seen)))
                continue
            out.append(Match(row, item, score))
            kept += 1
        return out


def ngram_spans(
    train_text: str, eval_text: str, n: int = 13
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int, int]:
    """Where an eval item's n-grams (as ``NgramIndex`` forms them) occur in a training text: (character spans in the
    training text, in the item, n-grams matched, the item's n-grams). For the report; one pair at a time."""
    train, item = located_words(train_text), located_words(eval_text)
    length = min(n, len(item))
    if length == 0:
        return [], [], 0, 0
    grams = {tuple(t[0] for t in item[k : k + length]): k for k in range(len(item) - length + 1)}
    train_hit: set[int] = set()
    item_hit: set[int] = set()
    matched = set()
    for k in range(len(train) - length + 1):
        gram = tuple(t[0] for t in train[k : k + length])
        if gram in grams:
            matched.add(gram)
            train_hit.update(range(k, k + length))
            item_hit.update(range(grams[gram], grams[gram] + length))
    return (
        char_spans([t[1:] for t in train], train_hit),
        char_spans([t[1:] for t in item], item_hit),
        len(matched),
        len(grams),
    )
