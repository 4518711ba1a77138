"""Contamination gate: find training rows that overlap the test items of a recipe's eval tasks.

Two methods, each reporting (train row, eval item, score) pairs:

* ``ngram`` — word n-grams (lowercased, punctuation stripped, ``1,000`` -> ``1000``). An eval item of m words
  contributes its min(n, m)-grams (GPT-3 style: an item shorter than n must appear whole); items under
  ``MIN_WORDS`` words are left to the embedding method. Eval n-grams are hashed (64-bit polynomial hashes over
  per-word hashes) into one sorted array per length; training rows are hashed chunk by chunk with numpy, a bitmap of
  the eval hashes' low bits drops most of their n-grams, and the rest are looked up with ``searchsorted``: O(T) plus
  O(t log E) for T training n-grams, t of them past the bitmap and E eval n-grams, never pairwise. Score: the fraction of
  the eval item's n-grams present in the row. Checked text: the whole row (every message, input, chosen/rejected).
* ``embedding`` — all-MiniLM-L6-v2 cosine between the row's prompt (user turns + input) and each eval item
  (Platypus's test-set exclusion, [PL] §2.2), computed for lexical candidates only (``lexical_candidates``,
  menagerie/data/candidates.py): pairs sharing enough of the item's content-word links, checked in the best window
  of the prompt, at most ``TOP_K`` per row. The candidate's window (the whole prompt when it is short, as before;
  the sentence around the match in a long one) is embedded, first 128 word pieces. A row's match is its best candidate
  at or above the threshold. Rows without candidates are never embedded.

Both methods' row-wise work runs in `workers` forked processes over contiguous row ranges (menagerie/data/shards.py);
the results do not depend on the number of workers.

Guard (both methods, on by default): every number and unit word in the eval item, its operation class (add, sub, mul,
div words or symbols), and every capitalised word that does not start
a sentence (a named entity), or is an acronym or Roman numeral, must occur in the training text. A copy or paraphrase keeps them; a near miss from
the same template with other numbers or names does not, and MiniLM alone cannot tell "23 plus 58" from "24 plus 59".
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
    return {name for name, vocab in OPERATIONS.items() if not tokens.isdisjoint(vocab)}


def _counted(word: str) -> bool:
    """Words whose repeats the guard counts: numbers and units ("54 + 54" needs two 54s)."""
    return word.isdigit() or word in UNITS


def guard_words(text: str) -> set[str]:
    """The words of `text`, repeats of numbers and units counted: the second "54" is "54#2"."""
    counts = Counter(words(text))
    out = set(counts)
    for word, count in counts.items():
        if count > 1 and _counted(word):
            out.update(f"{word}#{k}" for k in range(2, count + 1))
    return out


class GuardTerms(NamedTuple):
    """What a copy or paraphrase of an eval item must keep."""
    words: frozenset[str]   # its numbers and units (repeats marked, see guard_words) and named entities, all of them
    ops: frozenset[str]     # its operation classes (add, sub, mul, div): at least one of them


def guard_terms(text: str) -> GuardTerms:
    """The guard terms of an eval item (see the module doc)."""
    kept = {w for w in guard_words(text) if _counted(w.split("#")[0])}
    for match in _CAPITALISED.finditer(text):
        before = text[:match.start()].rstrip()
        if before and before[-1] not in ".!?:;\"'>|([{" and not text[match.start() - 1:match.start()].isalnum():
            kept.add(match.group().lower())
    return GuardTerms(frozenset(kept), frozenset(_operations(set(words(text)))))


def passes_guard(terms: GuardTerms, train_words: set[str]) -> bool:
    return terms.words <= train_words and (not terms.ops or bool(terms.ops & _operations(train_words)))


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


def _no_phases(name: str) -> AbstractContextManager:
    return nullcontext()


def ngram_matches(train_texts: Sequence[str], eval_texts: Sequence[str], n: int = 13,
                  guard: bool = True, terms: Sequence | None = None,
                  phase: Callable[[str], AbstractContextManager] = _no_phases,
                  workers: int = 1) -> list[tuple[int, int, float]]:
    """(train index, eval index, score) for training texts that share an n-gram with an eval item.

    `terms`: the eval items' ``guard_terms``, when the caller has them already; `phase(name)` wraps each step;
    `workers`: processes for the lookups."""
    from menagerie.data.shards import map_shards

    with phase("index"):
        if guard and terms is None:
            terms = [guard_terms(t) for t in eval_texts]
        index = NgramIndex(eval_texts, n)
    with phase("query"):
        def lookup(lo: int, hi: int) -> list[tuple[int, int, float]]:
            return [(lo + row, item, score) for row, item, score in index.query(train_texts[lo:hi])]

        hits = [hit for part in map_shards(lookup, len(train_texts), workers) for hit in part]
    with phase("guard"):
        return [(row, item, score) for row, item, score in hits
                if not guard or passes_guard(terms[item], guard_words(train_texts[row]))]


def lexical_candidates(train_prompts: Sequence[str], eval_texts: Sequence[str], guard: bool = True,
                       terms: Sequence | None = None, stats: dict | None = None,
                       phase: Callable[[str], AbstractContextManager] = _no_phases, workers: int = 1,
                       ) -> list[tuple[float, int, int, str]]:
    """The pairs the embedding method embeds: (-rank, train index, eval index, window text), best first per row.

    A pair qualifies when the row holds at least ``MIN_LINK_FRACTION`` of the item's term links, its best window
    holds at least ``MIN_CONTAINMENT`` of the item's term weight and (with `guard`) the prompt and the window pass the
    guard; a row keeps its ``TOP_K`` best. Rank: window containment x window density (share of its content terms
    that are the item's) x the summed rarity (log inverse row frequency) of the item's terms in it, so a dense,
    specific match ranks above common words scattered in a long text. See candidates.py. Two passes over the rows,
    each in `workers` processes: link candidates and term row frequencies, then (with the rarities of all rows)
    the windows.
    """
    from menagerie.data.candidates import LexicalIndex
    from menagerie.data.shards import map_shards

    stats = {} if stats is None else stats
    with phase("index"):
        index = LexicalIndex(eval_texts)
        if guard and terms is None:
            terms = [guard_terms(t) for t in eval_texts]
    with phase("candidates"):
        def propose(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
            counts: dict = {}
            rows, items, _, row_df = index.candidates(train_prompts[lo:hi], stats=counts)
            return lo + rows, items, row_df, counts.get("link_hits", 0)

        parts = map_shards(propose, len(train_prompts), workers)
        rows = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        items = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
        row_df = sum((p[2] for p in parts), np.zeros(index.size, np.int64))
        stats["link_hits"] = stats.get("link_hits", 0) + sum(p[3] for p in parts)
    with phase("verify"):
        order = np.lexsort((items, rows))
        rows, items = rows[order], items[order]
        idf = np.log((len(train_prompts) + 1) / (row_df + 1))   # how rare each term is in these rows

        def check(lo: int, hi: int) -> list[tuple[float, int, int, str]]:
            a, b = np.searchsorted(rows, [lo, hi])
            return _verify(index, train_prompts, rows[a:b].tolist(), items[a:b].tolist(), idf,
                           terms if guard else None)

        verified = [v for part in map_shards(check, len(train_prompts), workers) for v in part]
        stats.update(skipped_items=index.skipped, candidate_pairs=len(rows), verified_pairs=len(verified),
                     rows_with_candidates=len({v[1] for v in verified}))
    return verified


def _verify(index: LexicalIndex, prompts: Sequence[str], rows: list[int], items: list[int], idf: np.ndarray,
            terms: Sequence | None) -> list[tuple[float, int, int, str]]:
    """`lexical_candidates`' window check of (row, item) pairs sorted by row: each row's ``TOP_K`` best."""
    from menagerie.data.candidates import MIN_CONTAINMENT

    verified: list[tuple[float, int, int, str]] = []
    per_row: list[tuple[float, int, int, str]] = []
    row_words, occurrences, current = None, None, None
    for row, item in zip(rows, items):
        prompt = prompts[row]
        if row != current:
            verified += sorted(per_row)[:TOP_K]
            per_row, current, occurrences = [], row, None
            row_words = guard_words(prompt) if terms is not None else None
        if terms is not None and not passes_guard(terms[item], row_words):
            continue
        occurrences = occurrences or index.occurrences(prompt)
        window, containment, matched, density = index.window(prompt, item, occurrences)
        if containment < MIN_CONTAINMENT - 1e-9:
            continue
        if terms is not None and window is not prompt and not passes_guard(terms[item], guard_words(window)):
            continue
        per_row.append((-containment * density * float(idf[matched].sum()), row, item, window))
    return verified + sorted(per_row)[:TOP_K]


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
                     phase: Callable[[str], AbstractContextManager] = _no_phases) -> list[tuple[int, int, float]]:
    """Embed `lexical_candidates`' pairs: each candidate's window once, each candidate item once (`cache_dir`: item
    vectors kept by content hash across runs); a row's match is its best candidate at or above `threshold`.

    With `max_pairs`, only that many candidates are embedded, best ranked first, and the rest are counted in
    ``stats["unchecked_pairs"]``. `stats` receives the counts; `phase(name)` wraps each step.
    """
    from menagerie.data.embeddings import encode, encode_cached

    stats = {} if stats is None else stats
    checked = sorted(candidates)[:max_pairs] if max_pairs is not None else candidates
    stats["unchecked_pairs"] = len(candidates) - len(checked)
    with phase("embed"):
        windows = list(dict.fromkeys(v[3] for v in checked))
        wanted = sorted({v[2] for v in checked})
        window_vec = encode(windows, max_tokens=max_tokens)
        cached: dict = {}
        item_vec = encode_cached([eval_texts[i] for i in wanted], max_tokens=max_tokens, cache_dir=cache_dir,
                                 stats=cached)
        stats.update(embedded_pairs=len(checked), embedded_windows=len(windows), embedded_items=len(wanted),
                     items_from_cache=cached.get("cache_hits", 0))
    with phase("score"):
        window_at = {w: k for k, w in enumerate(windows)}
        item_at = {i: k for k, i in enumerate(wanted)}
        best: dict[int, tuple[float, int]] = {}
        for _, row, item, window in checked:
            cosine = float(window_vec[window_at[window]] @ item_vec[item_at[item]])
            if cosine >= threshold and (row not in best or cosine > best[row][0]):
                best[row] = (cosine, item)
    return [(row, item, cosine) for row, (cosine, item) in sorted(best.items())]
