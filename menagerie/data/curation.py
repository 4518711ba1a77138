"""Platypus curation of a mixture's rows ([PL] §2.1, [PLc] data notebook).

* exact dedup: rows with the same instruction+input (first user message + `context`, whitespace-normalised) are
  collapsed to one, keeping the row with the longest output (assistant reply);
* near-duplicate removal: rows whose instruction+input embedding (all-MiniLM-L6-v2) is within `near_dup_cosine`
  of an earlier kept row are dropped. The paper says 0.8, the released notebook uses 0.7; recipes choose.

Returns the kept rows (original order) and a report of the counts.
"""

from __future__ import annotations


def _key(row: dict) -> str:
    user = next((m["content"] for m in row["messages"] if m["role"] == "user"), "")
    return " ".join(f"{user}\n{row.get('context', '')}".split())


def _output(row: dict) -> str:
    replies = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
    return row.get("chosen") or (replies[-1] if replies else "")


def exact_dedup(rows: list[dict]) -> list[dict]:
    """One row per instruction+input: the one with the longest output (first on ties), in first-seen order."""
    best: dict[str, int] = {}
    for index, row in enumerate(rows):
        key = _key(row)
        if key not in best or len(_output(row)) > len(_output(rows[best[key]])):
            best[key] = index
    keep = sorted(best.values())
    return [rows[i] for i in keep]


def near_dedup(rows: list[dict], threshold: float, vectors=None) -> list[dict]:
    """Drop each row within `threshold` cosine of an earlier kept row (greedy, in order)."""
    import numpy as np

    from menagerie.data.embeddings import encode

    if not rows:
        return rows
    vectors = encode([_key(r) for r in rows]) if vectors is None else vectors
    kept: list[int] = []
    dropped = np.zeros(len(rows), dtype=bool)
    chunk = 2048
    for start in range(0, len(rows), chunk):
        sims = vectors[start : start + chunk] @ vectors.T
        for offset in range(sims.shape[0]):
            i = start + offset
            if dropped[i]:
                continue
            kept.append(i)
            later = np.nonzero(sims[offset, i + 1 :] >= threshold)[0] + i + 1
            dropped[later] = True
    return [rows[i] for i in kept]


def curate(rows: list[dict], settings: dict) -> tuple[list[dict], dict]:
    """Apply the recipe's `curation` settings; returns (rows, report)."""
    report = {"input_rows": len(rows)}
    if settings.get("exact_dedup"):
        rows = exact_dedup(rows)
        report["after_exact_dedup"] = len(rows)
    if settings.get("near_dup_cosine"):
        rows = near_dedup(rows, settings["near_dup_cosine"])
        report["after_near_dedup"] = len(rows)
        report["near_dup_cosine"] = settings["near_dup_cosine"]
    report["output_rows"] = len(rows)
    return rows, report
