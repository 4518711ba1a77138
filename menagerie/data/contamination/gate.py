"""The contamination stage: check a recipe's training mixtures against its eval tasks' test items.

Test items and training texts: items.py. Methods: `ngram` compares questions and text answers with the whole row
(every turn, the assistant's included); `embedding` compares questions with the row's prompt; code answers are
compared with the whole row by normalised tokens (code_match.py; method `code`, part of `ngram`).

`run_gate` returns the filtered training rows per part and the report written to
`results/<recipe>/data/contamination.json`: per part, ONE entry per flagged row listing every match (method, kind,
task and item, score and the threshold it passed, the matched n-grams or window as an excerpt with character spans,
the item with its spans), a `reviewed` list of the guard's vetoes that scored above their threshold (with the
guard's reason), and a summary (with the embedding method's candidate counts per part, and a few flagged rows with
their spans for the leaderboard page).
Action `drop` removes flagged rows, `warn` keeps them, `fail` raises one ContaminationError naming the counts.
"""

from __future__ import annotations

import os

from menagerie.data import embeddings
from menagerie.data.contamination.candidates import lexical_candidates
from menagerie.data.contamination.code_match import K, code_matches, code_spans
from menagerie.data.contamination.embedding import score_candidates
from menagerie.data.contamination.guard import guard_terms
from menagerie.data.contamination.items import row_texts
from menagerie.data.contamination.ngram import ngram_matches, ngram_spans
from menagerie.data.contamination.records import Candidate, Match, Run
from menagerie.data.contamination.text import shared_term_spans, words
from menagerie.errors import MenagerieError

# what the report keeps of the embedding method's counts, per part (candidates.py, embedding.py)
EMBEDDING_COUNTS = (
    "skipped_items",
    "candidate_pairs",
    "verified_pairs",
    "rows_with_candidates",
    "unchecked_pairs",
    "embedded_windows",
    "embedded_items",
    "items_from_cache",
    "embedded_vetoes",
)
EXAMPLES = 10  # flagged rows the summary (eval.json, the leaderboard page) shows with their spans
CONTEXT_CHARS = 160  # an excerpt keeps this many characters around the matched spans
MAX_EXCERPT = 1200


def embedding_cache_dir() -> str | None:
    """Eval-item vectors are cached across runs unless MENAGERIE_EMBEDDING_CACHE=off."""
    return None if os.environ.get("MENAGERIE_EMBEDDING_CACHE") == "off" else str(embeddings.default_cache_dir())


class ContaminationError(MenagerieError):
    """Training data overlaps eval test items and the recipe's action is `fail`."""


def _excerpt(text: str, spans: list[tuple[int, int]]) -> tuple[str, list[list[int]]]:
    """The part of `text` around `spans` (CONTEXT_CHARS either side, at most MAX_EXCERPT), spans moved into it."""
    if not spans:
        return text[:MAX_EXCERPT], []
    lo = max(0, spans[0][0] - CONTEXT_CHARS)
    hi = min(len(text), max(spans[-1][1] + CONTEXT_CHARS, lo + 1), lo + MAX_EXCERPT)
    prefix, suffix = ("…" if lo > 0 else ""), ("…" if hi < len(text) else "")
    shift = len(prefix) - lo
    kept = [[max(a, lo) + shift, min(b, hi) + shift] for a, b in spans if a < hi and b > lo]
    return prefix + text[lo:hi] + suffix, kept


def _match(
    method: str,
    item: dict,
    score: float,
    threshold: float,
    train_text: str,
    train_spans: list,
    eval_spans: list,
    **extra,
) -> dict:
    excerpt, spans = _excerpt(train_text, train_spans)
    return {
        "method": method,
        "kind": item["kind"],
        "eval_task": item["task"],
        "eval_id": item["id"],
        "score": round(float(score), 4),
        "threshold": threshold,
        **extra,
        "train_excerpt": excerpt,
        "train_spans": spans,
        "eval_text": item["text"],
        "eval_spans": [list(s) for s in eval_spans],
    }


def find_pairs(
    rows: list[dict], items: list[dict], settings: dict, run: Run | None = None, workers: int = 1
) -> tuple[list[dict], list[dict]]:
    """(flagged, reviewed) of one part. `flagged`: one entry per flagged row {row, train_id, methods, matches};
    `reviewed`: the guard's vetoes that scored at or above their method's threshold, with its reason. `run` gets
    the embedding method's candidate counts and every step's timings; `workers`: processes for the row-wise work."""
    run = Run() if run is None else run
    texts = [row_texts(r) for r in rows]
    whole = [t[0] for t in texts]
    guard = settings["guard"]
    n, overlap = settings["ngram"], settings.get("ngram_min_overlap", 0.0)
    code_overlap = settings.get("code_min_overlap", 0.5)
    cosine = settings["cosine"]
    textual = [k for k, i in enumerate(items) if not i.get("code")]
    questions = [k for k, i in enumerate(items) if i["kind"] == "question"]
    code = [k for k, i in enumerate(items) if i.get("code")]
    terms = {k: guard_terms(items[k]["text"]) for k in textual} if guard else {}
    found: list[tuple[int, dict]] = []
    reviewed: list[tuple[int, dict]] = []

    def add(match: Match, entry: dict) -> None:  # a guard veto (with its reason) is reviewed, not flagged
        if match.reason:
            reviewed.append((match.row, {**entry, "reason": match.reason}))
        else:
            found.append((match.row, entry))

    if "ngram" in settings["methods"] and textual:
        vetoed: list[Match] = []
        hits = ngram_matches(
            whole,
            [items[k]["text"] for k in textual],
            n,
            guard,
            terms=[terms[k] for k in textual] if guard else None,
            run=run,
            workers=workers,
            min_overlap=overlap,
            top=2,
            vetoed=vetoed,
        )
        for hit in hits + vetoed:
            item = items[textual[hit.item]]
            train_spans, eval_spans, matched, total = ngram_spans(whole[hit.row], item["text"], n)
            add(
                hit,
                _match(
                    "ngram",
                    item,
                    hit.score,
                    overlap,
                    whole[hit.row],
                    train_spans,
                    eval_spans,
                    ngrams=f"{matched} of {total} {min(n, len(words(item['text'])))}-grams",
                ),
            )
    if "ngram" in settings["methods"] and code:
        for hit in code_matches(whole, [items[k]["text"] for k in code], code_overlap, run, workers):
            item = items[code[hit.item]]
            train_spans, eval_spans, matched, total = code_spans(whole[hit.row], item["text"])
            add(
                hit,
                _match(
                    "code",
                    item,
                    hit.score,
                    code_overlap,
                    whole[hit.row],
                    train_spans,
                    eval_spans,
                    windows=f"{matched} of {total} normalised {K}-token windows",
                ),
            )
    if "embedding" in settings["methods"] and questions:
        prompts = [t[1] for t in texts]
        eval_texts = [items[k]["text"] for k in questions]
        vetoes: list[Candidate] = []
        candidates = lexical_candidates(
            prompts,
            eval_texts,
            guard,
            [terms[k] for k in questions] if guard else None,
            run,
            workers=workers,
            vetoed=vetoes,
        )
        high: list[Match] = []
        matches = score_candidates(
            candidates,
            eval_texts,
            cosine,
            max_pairs=settings.get("embedding_budget"),
            cache_dir=embedding_cache_dir(),
            run=run,
            vetoed=vetoes,
            reviewed=high,
        )
        for hit in matches + high:
            item = items[questions[hit.item]]
            window = hit.window or ""
            add(
                hit,
                _match(
                    "embedding",
                    item,
                    hit.score,
                    cosine,
                    window,
                    shared_term_spans(window, item["text"]),
                    shared_term_spans(item["text"], window),
                ),
            )

    def grouped(pairs: list[tuple[int, dict]]) -> list[dict]:
        per_row: dict[int, list[dict]] = {}
        for row, match in pairs:
            per_row.setdefault(row, []).append(match)
        return [
            {
                "row": row,
                "train_id": rows[row].get("id"),
                "methods": sorted({m["method"] for m in matches}),
                "matches": sorted(matches, key=lambda m: (m["method"], -m["score"])),
            }
            for row, matches in sorted(per_row.items())
        ]

    return grouped(found), [
        {"row": row, "train_id": rows[row].get("id"), **match}
        for row, match in sorted(reviewed, key=lambda p: (p[0], p[1]["method"]))
    ]


def run_gate(
    recipe_name: str,
    settings: dict,
    parts: dict[str, list[dict]],
    items: list[dict],
    unchecked: list[str],
    workers: int = 1,
) -> tuple[dict[str, list[dict]], dict]:
    """Filter every part per `settings` (the recipe's data.contamination); returns (kept rows per part, report).
    `workers`: processes for the row-wise work, a runtime knob (the job's threads) that changes no result."""
    flagged_by_part: dict[str, list[dict]] = {}
    reviewed_by_part: dict[str, list[dict]] = {}
    kept: dict[str, list[dict]] = {}
    summary_parts: dict[str, dict] = {}
    methods = list(settings["methods"]) + (["code"] if "ngram" in settings["methods"] else [])
    for part, rows in parts.items():
        run = Run()
        found, reviewed = find_pairs(rows, items, settings, run, workers) if items else ([], [])
        counts = run.counts
        flagged = {entry["row"] for entry in found}
        flagged_by_part[part], reviewed_by_part[part] = found, reviewed
        kept[part] = rows if settings["action"] == "warn" else [r for i, r in enumerate(rows) if i not in flagged]
        matches = [(e["row"], m) for e in found for m in e["matches"]]
        summary_parts[part] = {
            "train_rows": len(rows),
            "flagged_rows": len(flagged),
            "kept_rows": len(kept[part]),
            "by_method": {m: len({r for r, x in matches if x["method"] == m}) for m in methods},
            "by_kind": {k: len({r for r, x in matches if x["kind"] == k}) for k in ("question", "answer")},
            "by_task": {
                t: len({r for r, x in matches if x["eval_task"] == t})
                for t in sorted({x["eval_task"] for _, x in matches})
            },
            "reviewed": len(reviewed),
        }
        if "embedding" in settings["methods"] and counts:
            summary_parts[part]["embedding_candidates"] = {k: counts[k] for k in EMBEDDING_COUNTS if k in counts}
    flagged_total = sum(s["flagged_rows"] for s in summary_parts.values())
    examples = [
        {
            "part": part,
            "row": e["row"],
            "train_id": e["train_id"],
            "methods": e["methods"],
            **{
                k: e["matches"][0][k]
                for k in (
                    "method",
                    "kind",
                    "eval_task",
                    "eval_id",
                    "score",
                    "threshold",
                    "train_excerpt",
                    "train_spans",
                    "eval_text",
                    "eval_spans",
                )
            },
        }
        for part, entries in flagged_by_part.items()
        for e in entries
    ][:EXAMPLES]
    summary = {
        "action": settings["action"],
        "methods": settings["methods"],
        "ngram": settings["ngram"],
        "ngram_min_overlap": settings.get("ngram_min_overlap", 0.0),
        "code_min_overlap": settings.get("code_min_overlap", 0.5),
        "cosine": settings["cosine"],
        "guard": settings["guard"],
        "answers": settings.get("answers", True),
        "embedding_budget": settings.get("embedding_budget"),
        "eval_items": len(items),
        "eval_items_by_kind": {k: sum(i["kind"] == k for i in items) for k in ("question", "answer")},
        "eval_tasks": sorted({i["task"] for i in items}),
        "unchecked_tasks": unchecked,
        "flagged_rows": flagged_total,
        "parts": summary_parts,
        "examples": examples,
    }
    report = {"recipe": recipe_name, "summary": summary, "flagged": flagged_by_part, "reviewed": reviewed_by_part}
    if settings["action"] == "fail" and flagged_total:
        detail = ", ".join(
            f"{part} {s['flagged_rows']} of {s['train_rows']} ("
            + ", ".join(f"{m} {c}" for m, c in s["by_method"].items() if c)
            + ")"
            for part, s in summary_parts.items()
            if s["flagged_rows"]
        )
        raise ContaminationError(
            f"recipe '{recipe_name}': training data overlaps eval test items: {detail} "
            f"[data.contamination.action: fail; set it to drop to remove them]"
        )
    return kept, report
