"""Birbal's Natural Instructions sampling ([BB] §3, [BBc] data_prep/): which NI examples go into the mix.

The base model answers each selected NI task few-shot; each task gets a score (exact-match accuracy for tasks whose
answers are one word, ROUGE-L for the others); tasks are bucketed by score and more examples are drawn from the
tasks the model does worst on. Two stages, so that a change of the sampling rules or counts does not rerun the
inference, and the exact-match and generation datasets (one `source: ni_sampling` dataset per kind, per mix size)
share one inference:

  predict  selected tasks + base model -> predictions.jsonl {"task", "id", "prediction"} (greedy, batched, bounded
           by `max_new_tokens`; instances whose prompt is too long are recorded with `skipped`); it runs the model,
           so it lives in the inference layer: menagerie.inference.ni_predict
  sample   tasks + predictions -> the rows of one kind in the Open-Platypus schema ({instruction, input, output,
           data_source, id}, as [BBc] writes its NI files) and a report (per task: kind, metric, score, bucket,
           pool, requested, obtained; per bucket totals; seed; sha256 of inputs and outputs)

Task rows are the real NI task files (allenai/natural-instructions tasks/*.json: Definition, Positive Examples,
Instances[{id, input, output: [..]}], Categories, the language fields) with their file name in `task_name`: the
`natural_instructions` schema of menagerie.data.loaders. Settings: the `ni:` block of a `source: ni_sampling`
dataset (menagerie/schemas/config.schema.yaml; values and their sources in config.yaml).

Rules, exactly:
  selection  every language field (Input/Output/Instruction_language) within `languages`; no `exclude` pattern in
             the task name or its Source (case-insensitive substring); in `task_list` when one is given.
  kind       exact_match when every reference output of every instance has at most `exact_match_max_words`
             whitespace words ([BBc]: the "1_word" tasks), else generation.
  prediction the generated text up to the first blank line ([BBc] `split("\n\n")[0]`), stripped.
  scores     exact match: prediction == a reference (both stripped; case-sensitive as [BBc]); ROUGE-L: F1 of the
             longest common subsequence of rouge_score-style tokens (lowercase [a-z0-9]+ runs, no stemming),
             2*LCS / (len(pred) + len(ref)), best over the references; 0 when either side has no token. A task's
             score is the exact mean over its scored instances (fractions: a mean of exactly 0.3 is 0.3).
  buckets    [e_i, e_{i+1}) over `edges`; a perfect score falls in the top bucket when the top edge is 1; scores
             below the first or at/above the last edge (generation: >= 0.8) are in no bucket and not sampled.
  counts     each bucketed task gets a weight: `per_task[b]` (exact match: [BBc]'s rows per task), or `share[b]`
             split evenly over the tasks of bucket b (generation: [BB]'s 40% / 10%; shares of empty buckets go to
             the others in proportion). `requested`: `count` apportioned over the weights (largest remainder, ties
             by task name). `obtained`: the same, with no task above its pool; what a full task cannot give goes
             to the others by weight, so the kind yields `count` rows whenever its pools hold that many.
  pool       `all` instances of the task, or the `incorrect` ones (scored, and not an exact match / ROUGE-L < 1);
             minus instances whose instruction + input exceed `max_words` whitespace words.
  draw       random.Random(f"{seed}:{task}").sample(pool, obtained): a task's draw depends only on its own pool
             and count.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from menagerie.errors import MenagerieError, MissingInputError
from menagerie.io import iter_jsonl, read_jsonl

KINDS = ("exact_match", "generation")
METRICS = {"exact_match": "exact_match_accuracy", "generation": "rouge_l_f1"}
LANGUAGE_FIELDS = ("Input_language", "Output_language", "Instruction_language")
STOP = "\n\n"  # [BBc] keeps the prediction up to the first blank line
_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")


# ---------------------------------------------------------------------------------------------- tasks


def iter_tasks(path: str | Path) -> Iterator[dict]:
    """Task rows of a materialized `natural_instructions` dataset (jsonl, one task per line), one at a time."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"Natural Instructions task rows {path} do not exist (the dataset stage writes them)")
    for number, task in iter_jsonl(path):
        if not isinstance(task.get("task_name"), str):
            raise MenagerieError(
                f"{path} line {number}: a Natural Instructions task row needs its `task_name` (the task file's name)"
            )
        yield task


def definition(task: dict) -> str:
    value = task["Definition"]
    return (value if isinstance(value, str) else value[0]).strip()


def outputs(instance: dict) -> list[str]:
    value = instance["output"]
    return [value] if isinstance(value, str) else list(value)


def load_task_list(path: str | None, dataset: str) -> set[str] | None:
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise MissingInputError(
            f"dataset '{dataset}': the NI task list {path} (ni.selection.task_list) does not exist: save [BBc]'s "
            f"selected_NI_tasks.txt (github.com/Upaya07/NeurIPS-llm-efficiency-challenge, 463 task names, one per "
            f"line) there, or set `ni.selection.task_list: null` in your --configfile to select by language and "
            f"exclude patterns alone"
        )
    return {
        line.strip().removesuffix(".json") for line in file.read_text(encoding="utf-8").splitlines() if line.strip()
    }


def exclusion(task: dict, selection: dict, task_list: set[str] | None) -> str | None:
    """Why `task` is not selected ('task_list', 'language', 'exclude:<pattern>'), or None when it is."""
    if task_list is not None and task["task_name"] not in task_list:
        return "task_list"
    allowed = set(selection["languages"])
    for field in LANGUAGE_FIELDS:
        values = task.get(field) or []
        if not set([values] if isinstance(values, str) else values) <= allowed:
            return "language"
    haystack = [task["task_name"].lower()] + [str(s).lower() for s in task.get("Source") or []]
    for pattern in selection["exclude"]:
        if any(pattern.lower() in text for text in haystack):
            return f"exclude:{pattern}"
    return None


def select_tasks(path: str | Path, selection: dict, dataset: str) -> tuple[Iterator[dict], dict]:
    """(selected tasks, one at a time; a summary filled in as they stream: counts and names per exclusion)."""
    task_list = load_task_list(selection.get("task_list"), dataset)
    summary: dict[str, Any] = {"selected": 0, "expected": selection.get("expected_tasks"), "excluded": {}}

    def stream() -> Iterator[dict]:
        seen = set()
        for task in iter_tasks(path):
            seen.add(task["task_name"])
            reason = exclusion(task, selection, task_list)
            if reason:
                summary["excluded"].setdefault(reason, []).append(task["task_name"])
                continue
            summary["selected"] += 1
            yield task
        if task_list is not None:
            summary["task_list_missing"] = sorted(task_list - seen)

    return stream(), summary


def task_kind(task: dict, max_output_words: int) -> str:
    """exact_match when every reference of every instance has at most `max_output_words` words."""
    short = all(len(ref.split()) <= max_output_words for inst in task["Instances"] for ref in outputs(inst))
    return "exact_match" if short else "generation"


def scored_instances(task: dict, max_instances: int | None, seed: int) -> list[dict]:
    """The instances the model answers: all, or a seeded sample of `max_instances` (kept in file order)."""
    instances = task["Instances"]
    if max_instances is None or len(instances) <= max_instances:
        return list(instances)
    keep = sorted(random.Random(f"{seed}:{task['task_name']}").sample(range(len(instances)), max_instances))
    return [instances[i] for i in keep]


def few_shot_prompt(task: dict, text: str, shots: int) -> str:
    """The task's Definition, `shots` Positive Examples, then the instance (a plain completion prompt)."""
    parts = [f"Definition: {definition(task)}"]
    for example in (task.get("Positive Examples") or [])[:shots]:
        parts.append(f"Input: {example['input'].strip()}\nOutput: {example['output'].strip()}")
    parts.append(f"Input: {text.strip()}\nOutput:")
    return "\n\n".join(parts)


def clean_prediction(text: str) -> str:
    return text.split(STOP, 1)[0].strip()


# ---------------------------------------------------------------------------------------------- scores


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokenizer without stemming: lowercase runs of [a-z0-9]."""
    return _ROUGE_TOKEN.findall(text.lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> Fraction:
    """ROUGE-L F1 = 2*LCS / (len(prediction) + len(reference)) in tokens, exactly; 0 when either is empty."""
    pred, ref = rouge_tokens(prediction), rouge_tokens(reference)
    if not pred or not ref:
        return Fraction(0)
    return Fraction(2 * lcs_length(pred, ref), len(pred) + len(ref))


def exact_match(prediction: str, references: list[str]) -> bool:
    return prediction.strip() in {ref.strip() for ref in references}


def instance_score(kind: str, prediction: str, references: list[str]) -> Fraction:
    if kind == "exact_match":
        return Fraction(int(exact_match(prediction, references)))
    return max(rouge_l(prediction, ref) for ref in references)


def bucket_index(score: Fraction, edges: list[float]) -> int | None:
    """Bucket i is [edges[i], edges[i+1]); a score of exactly 1 is in the top bucket when the top edge is 1."""
    bounds = [Fraction(str(edge)) for edge in edges]
    for i in range(len(bounds) - 1):
        if bounds[i] <= score < bounds[i + 1]:
            return i
    if score == bounds[-1] == 1:
        return len(bounds) - 2
    return None


def bucket_label(index: int, edges: list[float]) -> str:
    closing = "]" if index == len(edges) - 2 and edges[-1] == 1 else ")"
    return f"[{edges[index]}, {edges[index + 1]}{closing}"


def apportion(total: int, weights: dict[str, Fraction]) -> dict[str, int]:
    """Split `total` over the keys in proportion to `weights` (largest remainder; ties by key); sums to `total`
    whenever some weight is positive."""
    out = {key: 0 for key in weights}
    positive = {key: w for key, w in weights.items() if w > 0}
    if not positive or total <= 0:
        return out
    whole = sum(positive.values())
    quotas = {key: Fraction(total) * w / whole for key, w in positive.items()}
    for key, quota in quotas.items():
        out[key] = int(quota)  # floor: quotas are non-negative
    leftover = total - sum(out.values())
    for key in sorted(positive, key=lambda k: (-(quotas[k] - out[k]), k))[:leftover]:
        out[key] += 1
    return out


def allocate(total: int, weights: dict[str, Fraction], caps: dict[str, int]) -> dict[str, int]:
    """`apportion`, with no key above its cap: capped keys are fixed at their cap and the rest is apportioned
    again over the others, until everything is placed or every key with weight is full."""
    out = {key: 0 for key in weights}
    active = {key for key, w in weights.items() if w > 0 and caps[key] > 0}
    remaining = total
    while remaining > 0 and active:
        share = apportion(remaining, {key: weights[key] for key in sorted(active)})
        full = {key for key in active if share[key] >= caps[key]}
        if not full:
            out.update({key: share[key] for key in active})
            break
        for key in full:
            out[key] = caps[key]
            remaining -= caps[key]
        active -= full
    return out


def plan(spec: dict, scores: dict[str, Fraction | None], pools: dict[str, int]) -> dict[str, dict]:
    """Bucket, requested and obtained count of every task of one kind (task -> {"bucket", "requested",
    "obtained"})."""
    edges = spec["edges"]
    buckets = {task: (bucket_index(score, edges) if score is not None else None) for task, score in scores.items()}
    sizes = [sum(1 for b in buckets.values() if b == i) for i in range(len(edges) - 1)]
    weights: dict[str, Fraction] = {}
    for task, b in buckets.items():
        if b is None:
            weights[task] = Fraction(0)
        elif spec.get("per_task") is not None:
            weights[task] = Fraction(str(spec["per_task"][b]))
        else:
            weights[task] = Fraction(str(spec["share"][b])) / sizes[b]
    requested = apportion(spec["count"], weights)
    obtained = allocate(spec["count"], weights, pools)
    return {
        task: {"bucket": buckets[task], "requested": requested[task], "obtained": obtained[task]} for task in scores
    }


def in_pool(spec: dict, task: dict, instance: dict, score: Fraction | None) -> bool:
    if spec["pool"] == "incorrect" and (score is None or score >= 1):
        return False
    if spec.get("max_words") is not None:
        return len(f"{definition(task)} {instance['input']}".split()) <= spec["max_words"]
    return True


def draw(pool: list[int], k: int, seed: int, task: str) -> list[int]:
    return random.Random(f"{seed}:{task}").sample(pool, min(k, len(pool)))


def row(task: dict, kind: str, instance: dict) -> dict:
    """[BBc]'s NI row: the first Definition, the instance input, its first reference."""
    return {
        "instruction": definition(task),
        "input": instance["input"],
        "output": outputs(instance)[0],
        "data_source": f"natural_instructions/{kind}/{task['task_name']}",
        "id": str(instance["id"]),
    }


# ---------------------------------------------------------------------------------------------- stages


def read_predictions(path: str | Path) -> dict[str, dict[str, dict]]:
    """task -> instance id -> prediction row."""
    out: dict[str, dict[str, dict]] = {}
    for rec in read_jsonl(path):
        out.setdefault(rec["task"], {})[str(rec["id"])] = rec
    return out


def sample(name: str, entry: dict, tasks_path: str | Path, predictions_path: str | Path) -> tuple[list[dict], dict]:
    """(rows, report) of a `source: ni_sampling` dataset from its task rows and predictions: two streaming passes
    over the tasks, scores and pools first, rows second."""
    from menagerie.io import jsonl_sha256, sha256_file

    spec = entry["ni"]
    kind, seed = spec["kind"], spec["seed"]
    predictions = read_predictions(predictions_path)
    meta: dict[str, dict] = {}
    exact: dict[str, Fraction | None] = {}
    pools: dict[str, list[int]] = {}
    other_kind: list[str] = []
    stream, selection = select_tasks(tasks_path, spec["selection"], name)
    for task in stream:
        task_name = task["task_name"]
        if task_kind(task, spec["exact_match_max_words"]) != kind:
            other_kind.append(task_name)
            continue
        preds = predictions.get(task_name, {})
        scores: dict[str, Fraction] = {}
        for inst in task["Instances"]:
            rec = preds.get(str(inst["id"]))
            if rec is not None and rec.get("prediction") is not None:
                scores[str(inst["id"])] = instance_score(kind, rec["prediction"], outputs(inst))
        exact[task_name] = sum(scores.values(), Fraction(0)) / len(scores) if scores else None
        pools[task_name] = [
            i for i, inst in enumerate(task["Instances"]) if in_pool(spec, task, inst, scores.get(str(inst["id"])))
        ]
        meta[task_name] = {
            "metric": METRICS[kind],
            "categories": task.get("Categories") or [],
            "score": round(float(exact[task_name]), 6) if exact[task_name] is not None else None,
            "instances": len(task["Instances"]),
            "scored": len(scores),
            "skipped": sum(1 for r in preds.values() if r.get("prediction") is None),
            "pool": len(pools[task_name]),
        }
    edges = spec["edges"]
    for task, planned in plan(spec, exact, {t: len(p) for t, p in pools.items()}).items():
        b = planned["bucket"]
        meta[task].update(
            {
                "bucket": bucket_label(b, edges) if b is not None else None,
                "requested": planned["requested"],
                "obtained": planned["obtained"],
            }
        )
        if b is None:
            closing = "]" if edges[-1] == 1 else ")"
            meta[task]["unbucketed"] = (
                "no scored instance" if exact[task] is None else f"score outside [{edges[0]}, {edges[-1]}{closing}"
            )
    buckets = []
    for i in range(len(edges) - 1):
        members = sorted(t for t in meta if meta[t]["bucket"] == bucket_label(i, edges))
        buckets.append(
            {
                "bucket": bucket_label(i, edges),
                "tasks": members,
                "requested": sum(meta[t]["requested"] for t in members),
                "obtained": sum(meta[t]["obtained"] for t in members),
            }
        )
    rows: list[dict] = []
    stream, _ = select_tasks(tasks_path, spec["selection"], name)
    for task in stream:
        if task["task_name"] in meta:
            picked = draw(pools[task["task_name"]], meta[task["task_name"]]["obtained"], seed, task["task_name"])
            rows.extend(row(task, kind, task["Instances"][i]) for i in picked)
    obtained = sum(m["obtained"] for m in meta.values())
    report = {
        "dataset": name,
        "kind": kind,
        "metric": METRICS[kind],
        "model": entry["model"],
        "tasks_dataset": entry["tasks"],
        "seed": seed,
        "count": spec["count"],
        "requested": sum(m["requested"] for m in meta.values()),
        "obtained": obtained,
        "rows": len(rows),
        "settings": {k: v for k, v in spec.items() if k not in ("inference", "selection")},
        "inference": {k: v for k, v in spec["inference"].items() if k != "resources"},
        "selection": {**selection, "other_kind": len(other_kind)},
        "buckets": buckets,
        "unbucketed_tasks": sorted(t for t in meta if meta[t]["bucket"] is None),
        "tasks": dict(sorted(meta.items())),
        "sha256": {
            "tasks": sha256_file(tasks_path),
            "predictions": sha256_file(predictions_path),
            "rows": jsonl_sha256(rows),
        },
    }
    warnings = []
    if selection["expected"] is not None and selection["selected"] != selection["expected"]:
        warnings.append(f"{selection['selected']} tasks selected, the paper reports {selection['expected']}")
    if obtained < spec["count"]:
        warnings.append(f"{obtained} of {spec['count']} {kind} rows: the bucketed tasks' pools hold no more")
    if warnings:
        report["warnings"] = warnings
    return rows, report
