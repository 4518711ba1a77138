"""Code answers in training rows: a normalised-token check that survives renamed variables and reformatting.

The contamination gate indexes each code eval item's reference solution (HumanEval's canonical solutions) here and
looks for it in every training row (all turns, the assistant's included).

* **Tokens** (a tolerant regex, not Python's ``tokenize``: training rows are prose around code, often broken):
  identifiers, numbers, string literals, operators; comments and whitespace dropped, so re-indenting, re-wrapping
  or re-spacing changes nothing. Python keywords, builtins and attribute names (after ".") are kept as they are;
  literals are kept.
* **Names canonicalised by first appearance**, per window of ``K`` tokens: in each window every other identifier
  stands for how far back its previous use in the window is (0 at its first use), which is first-appearance
  numbering: ``total = total + x`` and ``acc = acc + y`` give the same window, ``a = b + a`` does not.
* **Index**: each solution's windows (``min(K, its tokens)`` long) hashed into one set per length; a row's windows
  are hashed with numpy (K vector steps, no per-window Python) and looked up. Score: the share of the solution's
  windows found in the row. Only rows that look like code (``looks_like_code``) are tokenised.
"""

from __future__ import annotations

import builtins
import keyword
import re
from collections.abc import Sequence

import numpy as np

from menagerie.data.contamination.arrays import PRIME, token_hash
from menagerie.data.contamination.records import Match, Run
from menagerie.data.contamination.shards import map_shards
from menagerie.data.contamination.text import char_spans

K = 12
_DISTANCE = np.uint64(0x9E3779B97F4A7C15)
_TOKEN = re.compile(
    r"[A-Za-z_]\w*|\d+(?:\.\d+)?|==|!=|<=|>=|//|\*\*|->|\+=|-=|\*=|/=|#[^\n]*"
    r'|"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|[^\s\w]'
)
# what a row needs to be tokenised: a definition, a statement starting a line, a comparison or an augmented
# assignment (ordinary prose has none of these; a solution pasted without its "def" line has its "return").
# Substring tests first (C speed), the patterns only where one of their words occurs.
_OPERATORS = ("==", "!=", "<=", ">=", "+=", "-=", "*=", "/=")
_HINTS = (
    ("def ", re.compile(r"\bdef \w+\s*\(")),
    ("return", re.compile(r"^[ \t]*return\b", re.M)),
    (":\n", re.compile(r"^[ \t]*(?:for|if|elif|while)\b[^\n]*:[ \t]*$", re.M)),
    ("lambda", re.compile(r"\blambda\b[^\n:]*:")),
)


def looks_like_code(text: str) -> bool:
    """Whether `text` holds something only code has (see _HINTS): the rows `CodeIndex.query` tokenises."""
    return any(op in text for op in _OPERATORS) or any(
        word in text and pattern.search(text) for word, pattern in _HINTS
    )


KEPT = frozenset(keyword.kwlist) | frozenset(dir(builtins))


def code_tokens(text: str) -> list[tuple[str, bool, int, int]]:
    """(token, is a renameable identifier, start, end) of `text`, comments dropped."""
    out, after_dot = [], False
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token[0] == "#":
            continue
        out.append((token, _renameable(token) and not after_dot, match.start(), match.end()))
        after_dot = token == "."
    return out


def _renameable(token: str) -> bool:
    return (token[0].isalpha() or token[0] == "_") and token not in KEPT


_NAME = token_hash("\0name")


def _arrays_of(tokens: list[str], cache: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per token: its hash (every renameable name the same) and how far back the same name was last used (a large
    number at its first use, 0 for other tokens). `cache`: token -> (hash, renameable)."""
    hashes: list[int] = []
    back: list[int] = []
    last: dict[str, int] = {}
    after_dot = False
    for k, token in enumerate(tokens):
        entry = cache.get(token)
        if entry is None:
            entry = cache[token] = (token_hash(token), _renameable(token))
        if entry[1] and not after_dot:
            hashes.append(_NAME)
            back.append(k - last[token] if token in last else 1 << 40)
            last[token] = k
        else:
            hashes.append(entry[0])
            back.append(0)
        after_dot = token == "."
    return np.array(hashes, dtype=np.uint64), np.array(back, dtype=np.int64)


def _arrays(tokens: list[tuple[str, bool, int, int]], cache: dict) -> tuple[np.ndarray, np.ndarray]:
    return _arrays_of([t[0] for t in tokens], cache)


def _words(text: str) -> list[str]:
    """The tokens of `text` alone (what `query` reads; `code_tokens` adds positions)."""
    return [t for t in _TOKEN.findall(text) if t[0] != "#"]


def window_hashes(base: np.ndarray, back: np.ndarray, length: int) -> np.ndarray:
    """Hash of every window of `length` tokens, each name replaced by its distance back inside the window."""
    n = len(base) - length + 1
    if n <= 0:
        return np.zeros(0, dtype=np.uint64)
    out = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(length):
            distance = back[j : j + n]
            inside = np.where(distance <= j, distance, 0).astype(np.uint64)
            out = out * PRIME + (base[j : j + n] ^ (inside * _DISTANCE))
    return out ^ np.uint64(length)


class CodeIndex:
    """Reference solutions as sets of normalised windows, one table per window length."""

    def __init__(self, solutions: Sequence[str], k: int = K):
        self.k = k
        self.cache: dict[str, tuple[int, bool]] = {}
        self.total = np.zeros(len(solutions), dtype=np.int64)
        per_length: dict[int, dict[int, set[int]]] = {}
        for item, text in enumerate(solutions):
            tokens = code_tokens(text)
            if not tokens:
                continue
            length = min(k, len(tokens))
            hashes = set(window_hashes(*_arrays(tokens, self.cache), length).tolist())
            self.total[item] = len(hashes)
            table = per_length.setdefault(length, {})
            for h in hashes:
                table.setdefault(h, set()).add(item)
        self.tables = {
            length: (np.array(sorted(table), dtype=np.uint64), table) for length, table in per_length.items()
        }

    def query(self, texts: Sequence[str], min_score: float = 0.0) -> list[tuple[int, int, float]]:
        """(text index, item, share of the item's windows found) for every pair at or above `min_score` (and at
        least one window), best first per text."""
        found: list[tuple[int, int, float]] = []
        if not self.tables:
            return found
        for row, text in enumerate(texts):
            if not looks_like_code(text):
                continue
            tokens = _words(text)
            if not tokens:
                continue
            base, back = _arrays_of(tokens, self.cache)
            counts: dict[int, int] = {}
            for length, (keys, table) in self.tables.items():
                hashes = window_hashes(base, back, length)
                at = np.searchsorted(keys, hashes).clip(max=len(keys) - 1)
                for h in set(hashes[keys[at] == hashes].tolist()):
                    for item in table[h]:
                        counts[item] = counts.get(item, 0) + 1
            scored = sorted(((-c / self.total[i], i) for i, c in counts.items()))
            found += [(row, item, -score) for score, item in scored if -score >= min_score - 1e-9]
        return found


def code_matches(
    train_texts: Sequence[str],
    solutions: Sequence[str],
    min_overlap: float = 0.5,
    run: Run | None = None,
    workers: int = 1,
) -> list[Match]:
    """Training texts holding at least `min_overlap` of a solution's normalised windows, every such solution, best
    first per row (score: the share of its windows), by row; `workers` processes; `run` times it (phase "code")."""
    run = Run() if run is None else run
    with run.phase("code"):
        index = CodeIndex(solutions)

        def lookup(lo: int, hi: int) -> list[Match]:
            return [Match(lo + row, item, score) for row, item, score in index.query(train_texts[lo:hi], min_overlap)]

        return [match for part in map_shards(lookup, len(train_texts), workers) for match in part]


def code_spans(
    train_text: str, solution: str, k: int = K
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int, int]:
    """(character spans of the matched windows in the training text, in the solution, windows matched, the
    solution's windows): where `CodeIndex` found the solution. For the report; one pair at a time."""
    cache: dict = {}
    train, item = code_tokens(train_text), code_tokens(solution)
    length = min(k, len(item))
    if length == 0:
        return [], [], 0, 0
    item_hashes = window_hashes(*_arrays(item, cache), length).tolist()
    train_hashes = window_hashes(*_arrays(train, cache), length).tolist()
    wanted = set(item_hashes)
    matched = wanted & set(train_hashes)
    train_hit = {p for s, h in enumerate(train_hashes) if h in matched for p in range(s, s + length)}
    item_hit = {p for s, h in enumerate(item_hashes) if h in matched for p in range(s, s + length)}
    return (
        char_spans([t[2:] for t in train], train_hit),
        char_spans([t[2:] for t in item], item_hit),
        len(matched),
        len(wanted),
    )
