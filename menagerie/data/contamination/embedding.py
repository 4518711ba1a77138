"""The embedding method: all-MiniLM-L6-v2 cosine between a row's prompt and an eval item (Platypus's test-set
exclusion, [PL] §2.2), computed for lexical candidates only (candidates.py).

Each candidate's window (the whole prompt when it is short; the sentence around the match in a long one) is embedded
once, first 128 word pieces, and each candidate item once (menagerie/data/embeddings.py; item vectors cached by
content hash across runs). A row's match is its best candidate at or above the threshold. Rows without candidates
are never embedded.
"""

from __future__ import annotations

from collections.abc import Sequence

from menagerie.data import embeddings
from menagerie.data.contamination.candidates import lexical_candidates
from menagerie.data.contamination.guard import GuardTerms
from menagerie.data.contamination.records import Candidate, Match, Run


def embedding_matches(
    train_prompts: Sequence[str],
    eval_texts: Sequence[str],
    threshold: float = 0.8,
    guard: bool = True,
    max_tokens: int = 128,
    terms: Sequence[GuardTerms] | None = None,
    max_pairs: int | None = None,
    cache_dir: str | None = None,
    run: Run | None = None,
    workers: int = 1,
) -> list[Match]:
    """Prompts within `threshold` cosine of an eval item (MiniLM): the `lexical_candidates` of the prompts
    (`workers` processes), scored by `score_candidates`."""
    run = Run() if run is None else run
    candidates = lexical_candidates(train_prompts, eval_texts, guard, terms, run, workers)
    return score_candidates(candidates, eval_texts, threshold, max_tokens, max_pairs, cache_dir, run)


def score_candidates(
    candidates: list[Candidate],
    eval_texts: Sequence[str],
    threshold: float = 0.8,
    max_tokens: int = 128,
    max_pairs: int | None = None,
    cache_dir: str | None = None,
    run: Run | None = None,
    vetoed: Sequence[Candidate] | None = None,
    reviewed: list[Match] | None = None,
) -> list[Match]:
    """Embed `lexical_candidates`' pairs: each candidate's window once, each candidate item once (`cache_dir`: item
    vectors kept by content hash across runs); a row's match is its best candidate at or above `threshold`, with the
    window embedded, by row.

    With `max_pairs`, only that many candidates are embedded, best ranked first, and the rest are counted in
    ``run.counts["unchecked_pairs"]``. `run` gets the counts (embedded_pairs, embedded_windows, embedded_items,
    items_from_cache, embedded_vetoes) and the timings (embed, score). `vetoed`: the guard's vetoes from
    `lexical_candidates` (at most `max_pairs` of them embedded too, best ranked first); those at or above
    `threshold` go to `reviewed`, with their window and reason.
    """
    run = Run() if run is None else run
    ordered = sorted(candidates, key=Candidate.order) if max_pairs is not None else candidates
    checked = ordered[:max_pairs] if max_pairs is not None else ordered
    run.counts["unchecked_pairs"] = len(candidates) - len(checked)
    review = sorted(vetoed or [], key=Candidate.order)[:max_pairs] if max_pairs is not None else list(vetoed or [])
    with run.phase("embed"):
        windows = list(dict.fromkeys([c.window for c in checked] + [c.window for c in review]))
        wanted = sorted({c.item for c in checked} | {c.item for c in review})
        window_vec = embeddings.encode(windows, max_tokens=max_tokens)
        cached: dict[str, int] = {}
        item_vec = embeddings.encode_cached(
            [eval_texts[i] for i in wanted], max_tokens=max_tokens, cache_dir=cache_dir, stats=cached
        )
        run.counts.update(
            embedded_pairs=len(checked),
            embedded_windows=len(windows),
            embedded_items=len(wanted),
            items_from_cache=cached.get("cache_hits", 0),
        )
        if vetoed is not None:
            run.counts["embedded_vetoes"] = len(review)
    with run.phase("score"):
        window_at = {w: k for k, w in enumerate(windows)}
        item_at = {i: k for k, i in enumerate(wanted)}
        best: dict[int, tuple[float, int, str]] = {}
        for c in checked:
            cosine = float(window_vec[window_at[c.window]] @ item_vec[item_at[c.item]])
            if cosine >= threshold and (c.row not in best or cosine > best[c.row][0]):
                best[c.row] = (cosine, c.item, c.window)
        for c in review:
            cosine = float(window_vec[window_at[c.window]] @ item_vec[item_at[c.item]])
            if cosine >= threshold and reviewed is not None:
                reviewed.append(Match(c.row, c.item, cosine, c.window, c.reason))
    return [Match(row, item, cosine, window) for row, (cosine, item, window) in sorted(best.items())]
