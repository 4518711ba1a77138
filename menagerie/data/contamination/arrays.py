"""The numpy machinery the n-gram, link and code indexes share: rows in chunks, 64-bit token hashes, per-token
values memoised, concatenated ranges."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

CHUNK_ROWS = 4096  # rows tokenised and looked up together: bounded memory, vectorised work
MASK = (1 << 64) - 1
PRIME = np.uint64(1099511628211)  # polynomial hashes of token windows (uint64 arithmetic wraps)

V = TypeVar("V")


def token_hash(token: str) -> int:
    """A 64-bit hash of one token (Python's string hash, spread by a multiply-add)."""
    return (hash(token) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & MASK


def memoised(tokens: Sequence[str], cache: dict[str, V], compute: Callable[[str], V]) -> list[V]:
    """`compute(token)` for every token, kept in `cache`: one C-level lookup pass over the tokens; only words not
    seen before take the Python branch (the n-gram hashes, the candidate terms)."""
    values = list(map(cache.get, tokens))
    if None in values:
        for i, value in enumerate(values):
            if value is None:
                token = tokens[i]
                value = cache.get(token)
                if value is None:
                    value = cache[token] = compute(token)
                values[i] = value
    return values  # type: ignore[return-value]   # every None was replaced


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for each (s, n), vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return offsets + np.arange(total, dtype=np.int64)
