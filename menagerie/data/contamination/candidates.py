"""Lexical candidates for the embedding check: which (training row, eval item) pairs are worth embedding.

MiniLM costs ~20-100 ms a text on 2 CPU cores, so the embedding method embeds only the pairs proposed here. A
paraphrase keeps most of an eval item's content words, close together; so does any copy. Three cheap steps:

1. **Content terms** (text.py). ``words()`` tokens minus English stopwords, stemmed by a trivial suffix rule
   (``-ies`` -> ``-y``; ``-ing``/``-ed``/``-s``, then a final ``-e``: "boiling", "boils" -> "boil"; "minutes",
   "minute" -> "minut"), operation words folded into their class ("plus", "sum", "+" -> ``op:add``; "minus",
   "subtract" -> ``op:sub``: the guard's classes), number words as digits ("four" -> "4", "dozen" -> "12"), unit
   spellings as one unit ("km" -> "kilometer"). Numbers are terms.
2. **Links (vectorised, no pairwise work).** A link is an unordered pair of distinct terms at most ``DISTANCE``
   content words apart. Each eval item's links go into one sorted table of 64-bit keys; each training text's links
   are looked up chunk by chunk (``searchsorted``). A pair (row, item) is a candidate when the row holds at least
   ``MIN_LINK_FRACTION`` of the item's links (and at least one). Cost: linear in the rows' words plus the hits.
   Items with fewer than two distinct terms have no links and are left to the n-gram method (counted as skipped).
3. **Window.** A long row may hold the item anywhere: the best window of ``2 * item words + 8`` whitespace-separated
   words must hold at least ``MIN_CONTAINMENT`` of the item's term weight (smoothed IDF over the eval items, so
   words every item shares weigh little); the sentence around its tightest matched span is what gets embedded
   (a paraphrase is a question among other text). A prompt no longer than the window is embedded whole, as before.
   Items with fewer than ``MIN_WINDOW_TERMS`` distinct terms are not looked for inside long prompts: a 3-word phrase
   holding both words of "Which winter is a family?" scored 0.86 cosine in the benchmark's ordinary text. A window
   (or a prompt) shorter than ``MIN_LENGTH_RATIO`` of the item's words is widened (or, a prompt, dropped): "crime
   rates?" scored 0.83 against "What are the crime rates in this area?". The planted paraphrases are at least 0.7
   of their item's length.

The thresholds are set on the planted set (tests/contamination_planted.py): its weakest paraphrase holds 1/6 of its
item's links and 0.5 of its term weight ("Who is the author of the book Pride and Prejudice?" for "Who wrote the
novel Pride and Prejudice?"), so the cut-offs (0.15, 0.4) sit below both; tests/test_contamination_scale.py checks
that no planted positive is dropped, short or placed inside a 400-word row.

Cost: the link stage is linear in the rows' words (plus one hit per shared link); the window stage is Python per
candidate pair. What it cannot bound is how many pairs qualify: with tens of thousands of eval items, most long rows
of ordinary text share a few items' words (bench/contamination.py measures it), which is what
``data.contamination.embedding_budget`` is for.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from menagerie.data.contamination.arrays import CHUNK_ROWS, concat_ranges, memoised
from menagerie.data.contamination.guard import GuardTerms, guard_reason, guard_terms, guard_words, passes_guard
from menagerie.data.contamination.records import Candidate, Run
from menagerie.data.contamination.shards import map_shards
from menagerie.data.contamination.text import content_terms, term, words

DISTANCE = 3  # links join terms at most this many content words apart
MIN_LINK_FRACTION = 0.15
MIN_CONTAINMENT = 0.4
WINDOW_MARGIN = 4  # extra words a window may reach past half the item length, for its sentence
MIN_WINDOW_TERMS = 3  # items with fewer distinct terms are compared with whole (short) prompts only
MIN_LENGTH_RATIO = 0.6  # a text compared with an item has at least this share of its words
_SKIP, _OTHER = -2, -1  # token codes: stopword/symbol; content word no eval item has
_SENTENCE_END = (".", "?", "!", '."', '?"', ".)", "?)", ":")
_PIECE = re.compile(r"(\S+)(\s*)")

REVIEW_LINK_FRACTION = 0.25  # a guard veto is reviewed when the row holds this share of the item's links
REVIEW_K = 2  # ... at most this many a row, most links first
TOP_K = 8  # candidates a row keeps, best ranked first


class Linked(NamedTuple):
    """What `LexicalIndex.candidates` finds in some rows: the (row, item) pairs holding enough of the item's links
    (parallel arrays, rows in order), per term how many of the rows hold it (their document frequency, for ranking),
    and how many (row, item link) hits the lookups made."""

    rows: np.ndarray
    items: np.ndarray
    fractions: np.ndarray  # the share of the item's links in the row
    row_df: np.ndarray
    link_hits: int


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


class LexicalIndex:
    """Eval items as content-term sets (IDF-weighted) and as links, in one sorted link table."""

    def __init__(self, eval_texts: Sequence[str], distance: int = DISTANCE):
        self.distance = distance
        self.vocab: dict[str, int] = {}
        self.cache: dict[str, int] = {}
        sequences = []
        for text in eval_texts:
            sequences.append([self.vocab.setdefault(t, len(self.vocab)) for t in content_terms(text)])
        n_items, size = len(eval_texts), max(len(self.vocab), 1)
        self.size = size
        self.lengths = np.array([len(text.split()) for text in eval_texts], dtype=np.int64)
        term_sets = [np.array(sorted(set(s)), dtype=np.int64) for s in sequences]
        counts = np.array([len(t) for t in term_sets], dtype=np.int64)
        self.indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.terms = np.concatenate(term_sets) if n_items else np.zeros(0, np.int64)
        df = np.bincount(self.terms, minlength=size)
        raw = np.log((n_items + 1) / (df[self.terms] + 1)) + 1.0
        totals = np.add.reduceat(raw, self.indptr[:-1]) if len(raw) else np.zeros(n_items)
        self.weights = raw / np.repeat(np.where(counts > 0, totals, 1.0), counts)
        flat = np.array([v for s in sequences for v in s], dtype=np.int64)
        owner = np.repeat(np.arange(n_items, dtype=np.int64), [len(s) for s in sequences])
        keys, owners = self._links(flat, owner)
        pairs = np.unique(np.stack([keys, owners], 1), axis=0) if len(keys) else np.zeros((0, 2), np.int64)
        self.link_keys, self.link_items = pairs[:, 0].copy(), pairs[:, 1].copy()
        # each distinct key once: where its items start in link_items, and how many there are
        self.key_set, self.key_start, self.key_items = np.unique(self.link_keys, return_index=True, return_counts=True)
        self.links = np.bincount(self.link_items, minlength=n_items)
        self.skipped = int((self.links == 0).sum())  # fewer than two distinct terms: n-gram method only
        self.piece_terms: dict[str, tuple[int, ...]] = {}  # whitespace piece -> its term ids (occurrences)

    def _links(self, codes: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(link key, owner) for every two distinct known terms at most `distance` content positions apart."""
        keys, owners = [], []
        for d in range(1, self.distance + 1):
            a, b = codes[:-d], codes[d:]
            ok = (owner[:-d] == owner[d:]) & (a >= 0) & (b >= 0) & (a != b)
            lo, hi = np.minimum(a[ok], b[ok]), np.maximum(a[ok], b[ok])
            keys.append(lo * self.size + hi)
            owners.append(owner[:-d][ok])
        return np.concatenate(keys), np.concatenate(owners)

    def _code(self, token: str) -> int:
        t = term(token)
        return _SKIP if t is None else self.vocab.get(t, _OTHER)

    def _codes(self, tokens: list[str]) -> np.ndarray:
        """Per token: its term's vocabulary id, _OTHER for a content word no item has, _SKIP for stopwords."""
        return np.array(memoised(tokens, self.cache, self._code), dtype=np.int64)

    def candidates(self, texts: Sequence[str], min_fraction: float = MIN_LINK_FRACTION) -> Linked:
        """Every (row, item) pair at or above `min_fraction` of the item's links, with per term how many of the
        texts hold it (see `Linked`)."""
        out_r: list[np.ndarray] = []
        out_i: list[np.ndarray] = []
        out_f: list[np.ndarray] = []
        hits_total = 0
        n_items = len(self.lengths)
        row_df = np.zeros(self.size, dtype=np.int64)
        for start in range(0, len(texts), CHUNK_ROWS):
            tokens = [words(t) for t in texts[start : start + CHUNK_ROWS]]
            flat = [w for row in tokens for w in row]
            if not flat or not len(self.link_keys):
                continue
            codes = self._codes(flat)
            owner = np.repeat(np.arange(len(tokens), dtype=np.int64), [len(r) for r in tokens])
            known = codes >= 0
            row_df += np.bincount(np.unique(owner[known] * self.size + codes[known]) % self.size, minlength=self.size)
            content = codes != _SKIP
            keys, rows = self._links(codes[content], owner[content])
            at = np.searchsorted(self.key_set, keys).clip(max=len(self.key_set) - 1)
            hit = self.key_set[at] == keys  # most of a row's links are no eval item's: drop them before dedup
            rows, at = rows[hit], at[hit]
            distinct = np.unique(rows * len(self.key_set) + at)  # a link twice in a row counts once
            rows, at = distinct // len(self.key_set), distinct % len(self.key_set)
            lo, n = self.key_start[at], self.key_items[at]
            hits_total += int(n.sum())
            pair = np.repeat(rows, n) * n_items + self.link_items[concat_ranges(lo, n)]
            pair, count = np.unique(pair, return_counts=True)
            p_rows, p_items = pair // n_items, pair % n_items
            fraction = count / self.links[p_items]
            keep = fraction >= min_fraction - 1e-9
            out_r.append(start + p_rows[keep])
            out_i.append(p_items[keep])
            out_f.append(fraction[keep])
        return Linked(_cat(out_r, np.int64), _cat(out_i, np.int64), _cat(out_f, np.float64), row_df, hits_total)

    def item_weights(self, item: int) -> dict[int, float]:
        lo, hi = self.indptr[item], self.indptr[item + 1]
        return dict(zip(self.terms[lo:hi].tolist(), self.weights[lo:hi].tolist()))

    def occurrences(self, text: str) -> tuple:
        """What `window` needs of one text, computed once per row: (pieces, (piece index, term id) of every content
        term in order, their piece indices, term id -> piece indices, indices of pieces that end a sentence or a
        line). Terms no eval item has get id -1 (they still count as content in a window's density)."""
        pieces: list[str] = []
        ends: set[int] = set()
        for match in _PIECE.finditer(text):
            if match.group(1).endswith(_SENTENCE_END) or "\n" in match.group(2):
                ends.add(len(pieces))
            pieces.append(match.group(1))
        cache, get = self.piece_terms, self.vocab.get
        if len(cache) > 2_000_000:
            cache.clear()
        found: list[tuple[int, int]] = []
        positions: dict[int, list[int]] = {}
        for index, piece in enumerate(pieces):
            ids = cache.get(piece)
            if ids is None:
                ids = cache[piece] = tuple(get(t, -1) for t in content_terms(piece))
            for term_id in ids:
                found.append((index, term_id))
                positions.setdefault(term_id, []).append(index)
        return pieces, found, [index for index, _ in found], positions, ends

    def window(self, text: str, item: int, occurrences: tuple | None = None) -> tuple[str, float, list[int], float]:
        """(text to embed, share of the item's term weight inside it, the item's terms in it, density) for one pair;
        density: the share of the window's distinct content terms that are the item's.

        Among windows of ``2 * item words + 8`` whitespace-separated words, the one holding the most of the item's
        term weight wins, narrowed to the shortest span of occurrences that holds it (two-pointer sweep); the span
        is then widened to the sentence around it (to the previous and next piece ending in ``.?!:`` or a line, at
        most ``item words // 2 + WINDOW_MARGIN`` words each way; a side with no such end in reach is not widened).
        A text no longer than the window is returned whole.
        `occurrences`: ``self.occurrences(text)``, when at hand.
        """
        pieces, found, found_at, positions, ends = occurrences or self.occurrences(text)
        n = int(self.lengths[item])
        size = 2 * n + 8
        weights = self.item_weights(item)
        shortest = math.ceil(MIN_LENGTH_RATIO * n)
        if len(pieces) < shortest:  # "crime rates?" is no paraphrase of "What are the crime rates in this area?"
            return "", 0.0, [], 0.0
        if len(pieces) <= size:
            return (text, *_measure(found, weights))
        if len(weights) < MIN_WINDOW_TERMS:  # a 2-word item inside a long text: any short phrase would do
            return "", 0.0, [], 0.0
        hits = sorted((index, t) for t in weights for index in positions.get(t, ()))
        best, span, score, left = 0.0, (0, 0), 0.0, 0
        counts: dict[int, int] = {}
        for index, term_id in hits:
            counts[term_id] = counts.get(term_id, 0) + 1
            if counts[term_id] == 1:
                score += weights[term_id]
            while hits[left][0] <= index - size or counts[hits[left][1]] > 1:  # out of reach, or repeated
                old = hits[left][1]
                counts[old] -= 1
                if counts[old] == 0:
                    score -= weights[old]
                left += 1
            width = index - hits[left][0]
            if score > best + 1e-12 or (abs(score - best) <= 1e-12 and width < span[1] - span[0]):
                best, span = score, (hits[left][0], index)
        reach = n // 2 + WINDOW_MARGIN
        lo, hi = span
        while lo > 0 and span[0] - lo < reach and lo - 1 not in ends:
            lo -= 1
        if lo > 0 and lo - 1 not in ends:  # no sentence start within reach: keep the span's own start
            lo = span[0]
        while hi < len(pieces) - 1 and hi - span[1] < reach and hi not in ends:
            hi += 1
        if hi < len(pieces) - 1 and hi not in ends:
            hi = span[1]
        while hi - lo + 1 < shortest:  # too short to stand for the item: widen, boundaries or not
            if lo > 0 and (span[0] - lo <= hi - span[1] or hi == len(pieces) - 1):
                lo -= 1
            else:
                hi += 1
        inside = found[bisect_left(found_at, lo) : bisect_right(found_at, hi)]
        return (" ".join(pieces[lo : hi + 1]), *_measure(inside, weights))


def _measure(found: list[tuple[int, int]], weights: dict[int, float]) -> tuple[float, list[int], float]:
    """(share of the item's term weight, the item's terms, density) of the content terms `found` in a text: density
    is the share of its distinct content terms that are the item's (each unknown word counts as its own term)."""
    matched = sorted({t for _, t in found if t in weights})
    distinct = len({t if t >= 0 else ("?", i) for i, t in found})
    return sum(weights[t] for t in matched), matched, len(matched) / max(distinct, 1)


def lexical_candidates(
    train_prompts: Sequence[str],
    eval_texts: Sequence[str],
    guard: bool = True,
    terms: Sequence[GuardTerms] | None = None,
    run: Run | None = None,
    workers: int = 1,
    vetoed: list[Candidate] | None = None,
) -> list[Candidate]:
    """The pairs the embedding method embeds, best first per row.

    A pair qualifies when the row holds at least ``MIN_LINK_FRACTION`` of the item's term links, its best window
    holds at least ``MIN_CONTAINMENT`` of the item's term weight and (with `guard`) the prompt and the window pass the
    guard; a row keeps its ``TOP_K`` best. Rank: window containment x window density (share of its content terms
    that are the item's) x the summed rarity (log inverse row frequency) of the item's terms in it, so a dense,
    specific match ranks above common words scattered in a long text. Two passes over the rows, each in `workers`
    processes: link candidates and term row frequencies, then (with the rarities of all rows) the windows.

    `run`: gets the counts (link_hits, skipped_items, candidate_pairs, verified_pairs, rows_with_candidates) and the
    timings (index, candidates, verify). `vetoed`: receives the pairs the guard rejected among those holding at
    least ``REVIEW_LINK_FRACTION`` of the item's links (a near copy, in words), ``REVIEW_K`` a row, each with its
    window and the guard's reason: what the report's `reviewed` list is made of.
    """
    run = Run() if run is None else run
    with run.phase("index"):
        index = LexicalIndex(eval_texts)
        if guard and terms is None:
            terms = [guard_terms(t) for t in eval_texts]
    with run.phase("candidates"):

        def propose(lo: int, hi: int) -> Linked:
            found = index.candidates(train_prompts[lo:hi])
            return found._replace(rows=lo + found.rows)

        parts = map_shards(propose, len(train_prompts), workers)
        rows = _cat([p.rows for p in parts], np.int64)
        items = _cat([p.items for p in parts], np.int64)
        fractions = _cat([p.fractions for p in parts], np.float64)
        row_df = sum((p.row_df for p in parts), np.zeros(index.size, np.int64))
        run.add("link_hits", sum(p.link_hits for p in parts))
    with run.phase("verify"):
        order = np.lexsort((items, rows))
        rows, items, fractions = rows[order], items[order], fractions[order]
        idf = np.log((len(train_prompts) + 1) / (row_df + 1))  # how rare each term is in these rows
        review = vetoed is not None and guard

        def check(lo: int, hi: int) -> tuple[list[Candidate], list[Candidate]]:
            a, b = np.searchsorted(rows, [lo, hi])
            return _verify(
                index,
                train_prompts,
                rows[a:b].tolist(),
                items[a:b].tolist(),
                fractions[a:b].tolist(),
                idf,
                terms if guard else None,
                review,
            )

        results = map_shards(check, len(train_prompts), workers)
        verified = [v for part, _ in results for v in part]
        if vetoed is not None:
            vetoed.extend(v for _, part in results for v in part)
        run.counts.update(
            skipped_items=index.skipped,
            candidate_pairs=len(rows),
            verified_pairs=len(verified),
            rows_with_candidates=len({v.row for v in verified}),
        )
    return verified


def _verify(
    index: LexicalIndex,
    prompts: Sequence[str],
    rows: list[int],
    items: list[int],
    fractions: list[float],
    idf: np.ndarray,
    terms: Sequence[GuardTerms] | None,
    review: bool = False,
) -> tuple[list[Candidate], list[Candidate]]:
    """`lexical_candidates`' window check of (row, item) pairs sorted by row: each row's ``TOP_K`` best, and (with
    `review`) its windows of the ``REVIEW_K`` guard vetoes holding the most of their item's links (at least
    ``REVIEW_LINK_FRACTION``): a bounded extra cost, two windows a row at most."""
    verified: list[Candidate] = []
    vetoed: list[Candidate] = []

    def windowed(row: int, item: int, occurrences: tuple) -> tuple[float, str] | None:
        window, containment, matched, density = index.window(prompts[row], item, occurrences)
        if containment < MIN_CONTAINMENT - 1e-9:
            return None
        return containment * density * float(idf[matched].sum()), window

    def flush(row: int, passed: list[int], refused: list[tuple[float, int]]) -> None:
        prompt, occurrences = prompts[row], None
        row_words: set[str] = set()
        kept: list[Candidate] = []
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
            kept.append(Candidate(row, item, rank, window))
        verified.extend(sorted(kept, key=Candidate.order)[:TOP_K])
        for _, item in sorted(refused)[:REVIEW_K]:
            assert terms is not None  # only the guard refuses
            occurrences = occurrences or index.occurrences(prompt)
            found = windowed(row, item, occurrences)
            if found is not None:
                rank, window = found
                reason = guard_reason(terms[item], guard_words(window)) or guard_reason(terms[item], row_words)
                vetoed.append(Candidate(row, item, rank, window, reason or "guard"))

    fractions_of: dict[int, float] = {}
    current: int | None = None
    pending: list[int] = []
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
