"""Scale benchmark of the contamination gate on generated data (2 cores).

Sizes: 326,154 training rows (the Tulu V2 mix) of Tulu-like length — words per row drawn from a log-normal with
median 350 and a long tail (capped at 3,000; mean ~ 450 words, roughly ShareGPT-heavy Tulu's ~600 tokens) — and
50,000 eval items of 15-150 words (MMLU/GSM8K/ARC-like questions). Words follow a Zipf law over a 30k vocabulary;
100 eval items are planted verbatim in training rows, so every run also checks recall.

Each method runs in its own subprocess so peak RSS is per method:
  python bench/contamination.py                       # n-gram at 1/8, 1/4, 1/2, 1 scale; embedding sampled
  python bench/contamination.py --scales 0.125 0.25 --embed-rows 2000
The embedding method is timed on --embed-rows prompts and the full-scale figure is extrapolated (encoding is linear
in rows; the cosine search is rows x eval items, measured on one chunk) and labelled as extrapolated.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

FULL_TRAIN, FULL_EVAL, PLANTED = 326_154, 50_000, 100


def make_data(train_rows: int, eval_rows: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(30_000)])
    ranks = np.arange(1, len(vocab) + 1)
    p = 1 / ranks ** 1.1
    cdf = np.cumsum(p / p.sum())

    def text(n: int) -> str:
        return " ".join(vocab[np.searchsorted(cdf, rng.random(n)).clip(max=len(vocab) - 1)])

    eval_texts = [text(int(n)) for n in rng.integers(15, 150, eval_rows)]
    lengths = np.minimum(rng.lognormal(np.log(350), 0.7, train_rows).astype(int) + 5, 3000)
    train = [text(int(n)) for n in lengths]
    for k in range(min(PLANTED, train_rows)):
        row = int(rng.integers(train_rows))
        train[row] = train[row][:200] + " " + eval_texts[k] + " " + train[row][200:400]
    return train, eval_texts


def run_ngram(scale: float) -> dict:
    from menagerie.data.contamination import ngram_matches

    train, eval_texts = make_data(int(FULL_TRAIN * scale), FULL_EVAL)
    words = sum(t.count(" ") + 1 for t in train)
    start = time.perf_counter()
    found = ngram_matches(train, eval_texts, n=13)
    seconds = time.perf_counter() - start
    planted = {i for _, i, _ in found if i < PLANTED}
    return {"method": "ngram", "scale": scale, "train_rows": len(train), "train_words": words,
            "eval_items": len(eval_texts), "seconds": round(seconds, 1), "rows_per_s": round(len(train) / seconds),
            "flagged": len(found), "planted_found": len(planted)}


def run_embedding(rows: int) -> dict:
    import torch

    from menagerie.data.embeddings import encode, top1_cosine

    torch.set_num_threads(2)
    train, eval_texts = make_data(rows, 2000)
    prompts = [" ".join(t.split()[:120]) for t in train]
    encode(prompts[:8])   # load the model outside the timing
    start = time.perf_counter()
    vectors = encode(prompts)
    encode_s = time.perf_counter() - start
    keys = np.random.default_rng(1).standard_normal((FULL_EVAL, 384)).astype(np.float32)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    start = time.perf_counter()
    top1_cosine(vectors, keys)
    search_s = time.perf_counter() - start
    rows_per_s = rows / encode_s
    full_encode = (FULL_TRAIN + FULL_EVAL) / rows_per_s
    full_search = search_s * FULL_TRAIN / rows
    return {"method": "embedding", "rows_measured": rows, "encode_rows_per_s": round(rows_per_s, 1),
            "search_s_per_1k_rows_vs_50k": round(search_s * 1000 / rows, 2),
            "extrapolated_full_scale_s": {"encode": round(full_encode), "cosine_search": round(full_search),
                                          "total": round(full_encode + full_search)}}


def child(args: argparse.Namespace) -> None:
    result = run_ngram(args.scale) if args.method == "ngram" else run_embedding(args.embed_rows)
    result["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1.0])
    parser.add_argument("--embed-rows", type=int, default=2000)
    parser.add_argument("--method", choices=["ngram", "embedding"], help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        child(args)
        return
    jobs = [["--method", "ngram", "--scale", str(s)] for s in args.scales]
    jobs.append(["--method", "embedding", "--embed-rows", str(args.embed_rows)])
    for job in jobs:
        out = subprocess.run([sys.executable, __file__, *job], capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        print(lines[-1] if lines else f"FAILED {job}: {out.stderr[-2000:]}", flush=True)


if __name__ == "__main__":
    main()
