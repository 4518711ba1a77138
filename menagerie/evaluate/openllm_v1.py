"""lm-eval's own results file, and the Open LLM Leaderboard v1 results.json, from the native lm-eval results the
evaluate stage keeps (`results/evals/<model key>/<suite hash>/work/lm_eval_results.json`: one `simple_evaluate`
output per task of the recipe, keyed by the task's name in config.yaml).

lm-eval's file (`write_native_results`) follows lm-eval 0.4.13's EvaluationTracker.save_results_aggregated
(lm_eval/loggers/evaluation_tracker.py): `<output_path>/<model_name_sanitized>/results_<date_id>.json`, where
date_id is the ISO time with ':' replaced by '-', holding simple_evaluate's keys (results, groups, group_subtasks,
configs, versions, n-shot, higher_is_better, n-samples, config, git_hash, date, ...) plus task_hashes and the
GeneralConfigTracker fields (model_source, model_name, model_name_sanitized, system_instruction(_sha),
fewshot_as_multiturn, chat_template(_sha), total_evaluation_time_seconds). Here the per-task runs are merged into
one file, as one `lm_eval --tasks a,b,c --output_path ...` run would have written it.

The v1 file (`write_v1_results`) follows the files of the Open LLM Leaderboard v1 (the open-llm-leaderboard
`results` and `details_<org>__<model>` datasets, e.g. results_2024-01-06T09-45-44.755529.json of
details_HenryJJ__Instruct_Yi-6B_Dolly15K, and the dataset cards' "Latest results"), and what the leaderboard's
reader needs (HuggingFaceH4/open_llm_leaderboard, src/leaderboard/read_evals.py, EvalResult.init_from_json_file):
  - `config_general`: lighteval_sha, num_few_shot_default, num_fewshot_seeds, override_batch_size, max_samples,
    job_id, start_time, end_time, total_evaluation_time_secondes (sic), model_name ("org/model": the reader splits
    it on '/'), model_sha, model_dtype ("torch.bfloat16": the reader's Precision.from_str), model_size;
  - `results` keyed `harness|<benchmark>|<n-shot>`: arc:challenge|25 and hellaswag|10 (acc, acc_norm), one
    `hendrycksTest-<subject>|5` per MMLU subject (acc, acc_norm), truthfulqa:mc|0 (mc1, mc2), winogrande|5 (acc),
    gsm8k|5 (acc), each metric with its `<metric>_stderr`, and `all`: the mean of each metric over the entries that
    have it;
  - `versions` (the reader looks up "harness|hendrycksTest-abstract_algebra|5" there and skips MMLU at version 0).
The reader averages, per benchmark, the entries whose key contains arc:challenge (acc_norm), hellaswag (acc_norm),
hendrycksTest (acc), truthfulqa:mc (mc2), winogrande (acc), gsm8k (acc); tests/test_openllm_v1.py runs that logic.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path


from menagerie import schemas
from menagerie.device import DTYPE_BYTES
from menagerie.errors import MenagerieError

SUITE = "openllm-v1"

MMLU_SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry "
    "college_computer_science college_mathematics college_medicine college_physics computer_security "
    "conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts "
    "high_school_biology high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics high_school_mathematics "
    "high_school_microeconomics high_school_physics high_school_psychology high_school_statistics "
    "high_school_us_history high_school_world_history human_aging human_sexuality international_law jurisprudence "
    "logical_fallacies machine_learning management marketing medical_genetics miscellaneous moral_disputes "
    "moral_scenarios nutrition philosophy prehistory professional_accounting professional_law professional_medicine "
    "professional_psychology public_relations security_studies sociology us_foreign_policy virology world_religions"
).split()

# lm-eval 0.4 task -> (v1 benchmark, v1 few-shot count, {v1 metric: lm-eval "metric,filter" key}).
V1_TASKS: dict[str, tuple[str, int, dict[str, str]]] = {
    "arc_challenge": ("arc:challenge", 25, {"acc": "acc,none", "acc_norm": "acc_norm,none"}),
    "hellaswag": ("hellaswag", 10, {"acc": "acc,none", "acc_norm": "acc_norm,none"}),
    "truthfulqa_mc1": ("truthfulqa:mc", 0, {"mc1": "acc,none"}),
    "truthfulqa_mc2": ("truthfulqa:mc", 0, {"mc2": "acc,none"}),
    "winogrande": ("winogrande", 5, {"acc": "acc,none"}),
    # v1's gsm8k `acc` is the exact match of the "#### <number>" answer: lm-eval 0.4's strict-match filter
    "gsm8k": ("gsm8k", 5, {"acc": "exact_match,strict-match"}),
}
# The v1 files carry acc_norm for every MMLU subject, equal to acc: the continuations are the single letters A-D,
# so normalising by their length changes nothing. lm-eval 0.4 reports acc only.
V1_TASKS.update(
    {f"mmlu_{s}": (f"hendrycksTest-{s}", 5, {"acc": "acc,none", "acc_norm": "acc,none"}) for s in MMLU_SUBJECTS}
)
V1_BENCHMARK_ORDER = ("arc:challenge", "hellaswag", "hendrycksTest", "truthfulqa:mc", "winogrande", "gsm8k")


def validate_v1(data: dict, where: str = "results.json") -> None:
    schemas.check(data, "openllm_v1.schema.json", where)


def sanitize_model_name(model_name: str) -> str:
    """lm-eval 0.4.13's lm_eval.utils.sanitize_model_name (the folder name of a model's results)."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", model_name)


# ------------------------------------------------------------------------------------------- inputs


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MenagerieError(f"{path}: {what} not found; rerun the evaluate stage that writes it") from None
    except json.JSONDecodeError as exc:
        raise MenagerieError(f"{path}: {what} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise MenagerieError(f"{path}: {what} must be a JSON object, got {type(data).__name__}")
    return data


def load_native(metrics_path: Path) -> tuple[dict, dict, Path]:
    """(metrics.json, its native lm-eval results per task, the native file's path), checked."""
    metrics = _read_json(metrics_path, "metrics.json")
    for key in ("model", "backend", "dtype", "batch_size", "tasks", "lm_eval_results"):
        if key not in metrics:
            raise MenagerieError(
                f"{metrics_path}: key '{key}' is missing (written by an older evaluate stage? rerun it)"
            )
    native_path = Path(metrics["lm_eval_results"])
    native = _read_json(native_path, "lm-eval's native results")
    for task, out in native.items():
        if not isinstance(out, dict):
            raise MenagerieError(f"{native_path}: key '{task}' must be an object (one simple_evaluate output)")
        for key in ("results", "configs", "versions", "n-shot", "n-samples", "config"):
            if key in out and not isinstance(out[key], dict):
                raise MenagerieError(f"{native_path}: key '{task}.{key}' must be an object")
        if out and not isinstance(out.get("results"), dict):
            raise MenagerieError(f"{native_path}: key '{task}.results' is missing")
    return metrics, native, native_path


def eval_times(metrics_path: Path) -> tuple[float, float, float] | None:
    """(start, end, seconds) of the evaluation, from the stage record beside metrics.json, or None.

    The timed block (`block_time_s`) is the evaluation; records without it (older ones) give the stage process's
    whole life (`wall_time_s`)."""
    record_path = Path(metrics_path).with_suffix(".provenance.json")
    if not record_path.exists():
        return None
    record = _read_json(record_path, "the evaluate stage record")
    try:
        start = datetime.strptime(record["started"], "%Y-%m-%dT%H:%M:%S%z")
        seconds = float(record["block_time_s"] if "block_time_s" in record else record["wall_time_s"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MenagerieError(
            f"{record_path}: key 'started', 'block_time_s' or 'wall_time_s' is missing or "
            f"malformed ({type(exc).__name__}: {exc})"
        ) from None
    return start.timestamp(), (start + timedelta(seconds=seconds)).timestamp(), seconds


def _suite_tasks(config: dict, recipe_name: str) -> dict[str, dict]:
    recipe = config["recipes"][recipe_name]
    return {t["name"]: t for s in recipe["eval"]["suites"] for t in config["suites"][s]}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ------------------------------------------------------------------------------------------- lm-eval's file


def native_results(
    config: dict,
    recipe_name: str,
    metrics: dict,
    native: dict,
    native_path: Path,
    times: tuple[float, float, float] | None,
) -> tuple[str, dict]:
    """(file name, content) of lm-eval's results_<date_id>.json for one evaluated model."""
    from menagerie import formats

    merged: dict = {
        k: {}
        for k in (
            "results",
            "groups",
            "group_subtasks",
            "configs",
            "versions",
            "n-shot",
            "higher_is_better",
            "n-samples",
        )
    }
    ran = {name: out for name, out in native.items() if out}
    for out in ran.values():
        for key in merged:
            merged[key].update(out.get(key) or {})
    if not merged["groups"]:
        del merged["groups"]  # lm-eval writes it only when a group aggregates
    first = next(iter(ran.values()), {})
    merged["config"] = first.get("config", {})
    for key in (
        "git_hash",
        "date",
        "pretty_env_info",
        "transformers_version",
        "lm_eval_version",
        "upper_git_hash",
        "tokenizer_pad_token",
        "tokenizer_eos_token",
        "tokenizer_bos_token",
        "eot_token_id",
        "max_length",
    ):
        if key in first:
            merged[key] = first[key]
    if "lm_eval_version" not in merged:
        merged["lm_eval_version"] = next(
            (t.get("lm_eval_version") for t in metrics["tasks"].values() if t.get("lm_eval_version")), None
        )
    merged["task_hashes"] = {}  # per-sample hashes: samples are not logged (log_samples=False)

    suite = _suite_tasks(config, recipe_name)
    chat = [suite[name] for name in ran if name in suite and suite[name].get("chat_format")]
    template = formats.chat_template_jinja(config["recipes"][recipe_name]["chat_format"]) if chat else None
    merged.update(
        {
            "model_source": metrics["backend"],
            "model_name": metrics["model"],
            "model_name_sanitized": sanitize_model_name(metrics["model"]),
            "system_instruction": None,
            "system_instruction_sha": None,
            "fewshot_as_multiturn": any(t.get("num_fewshot") for t in chat) if chat else False,
            "chat_template": template,
            "chat_template_sha": metrics.get("chat_template_sha256") if template else None,
            "total_evaluation_time_seconds": str(times[2]) if times else None,
        }
    )
    merged["menagerie"] = {
        "recipe": recipe_name,
        "key": metrics.get("key"),
        "source": str(native_path),
        "task_configs": {name: out.get("config", {}) for name, out in ran.items()},
    }
    end = datetime.fromtimestamp(times[1]) if times else datetime.fromtimestamp(native_path.stat().st_mtime)
    return f"results_{end.isoformat().replace(':', '-')}.json", merged


def write_native_results(config: dict, recipe_name: str, metrics_path: Path, out_dir: Path) -> Path:
    """`out_dir/<model_name_sanitized>/results_<date_id>.json`, as `lm_eval --output_path out_dir` lays it out;
    `out_dir` is replaced whole (atomically)."""
    from menagerie.io import atomic_directory

    metrics, native, native_path = load_native(metrics_path)
    filename, content = native_results(config, recipe_name, metrics, native, native_path, eval_times(metrics_path))
    relative = Path(content["model_name_sanitized"]) / filename
    with atomic_directory(out_dir) as tmp:
        (tmp / relative).parent.mkdir(parents=True)
        (tmp / relative).write_text(json.dumps(content, indent=2, ensure_ascii=False, default=str) + "\n")
    return out_dir / relative


# ------------------------------------------------------------------------------------------- the v1 file


def v1_results(
    config: dict,
    recipe_name: str,
    metrics: dict,
    native: dict,
    native_path: Path,
    times: tuple[float, float, float] | None,
) -> dict:
    """The Open LLM Leaderboard v1 results.json of a recipe's final model (see the module docstring)."""
    entries: dict[str, dict] = {}
    versions: dict[str, object] = {"all": 0}
    deviations: list[str] = []
    limits = set()
    first: dict = {}
    for out in native.values():
        if not out:
            continue
        first = first or out
        if out.get("config", {}).get("limit") is not None:
            limits.add(out["config"]["limit"])
        for lm_task, values in out["results"].items():
            if lm_task not in V1_TASKS:
                continue
            benchmark, v1_shots, metric_keys = V1_TASKS[lm_task]
            shots = (out.get("n-shot") or {}).get(lm_task)
            if not isinstance(shots, int):
                deviations.append(f"{lm_task}: few-shot count not recorded, keyed as v1's {v1_shots}")
                shots = v1_shots
            elif shots != v1_shots:
                deviations.append(f"{lm_task}: {shots}-shot (v1: {v1_shots}-shot)")
            key = f"harness|{benchmark}|{shots}"
            entry = entries.setdefault(key, {})
            for v1_metric, lm_key in metric_keys.items():
                value = _number(values.get(lm_key))
                if value is None:
                    continue
                metric, _, filt = lm_key.partition(",")
                entry[v1_metric] = value
                entry[f"{v1_metric}_stderr"] = _number(values.get(f"{metric}_stderr,{filt}"))
            if not entry:
                del entries[key]
                deviations.append(f"{lm_task}: no {'/'.join(sorted(set(metric_keys.values())))} in its results")
                continue
            versions[key] = (out.get("versions") or {}).get(lm_task)
    mmlu_keys = [k for k in entries if "|hendrycksTest-" in k]
    if mmlu_keys and len(mmlu_keys) != len(MMLU_SUBJECTS):
        deviations.append(f"MMLU: {len(mmlu_keys)} of {len(MMLU_SUBJECTS)} subjects")
    if limits:
        deviations.append(f"limit {', '.join(str(x) for x in sorted(limits))} examples per task (v1: all)")

    ordered = sorted(
        entries, key=lambda k: (next(i for i, b in enumerate(V1_BENCHMARK_ORDER) if k.split("|")[1].startswith(b)), k)
    )
    metric_names = [
        m
        for m in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "mc1", "mc1_stderr", "mc2", "mc2_stderr")
        if any(m in e for e in entries.values())
    ]
    average = {}
    for metric in metric_names:
        values = [entries[k][metric] for k in ordered if entries[k].get(metric) is not None]
        if values:
            average[metric] = sum(values) / len(values)
    results = {"all": average, **{k: entries[k] for k in ordered}}

    first_config = first.get("config") or {}
    # "torch.bfloat16", as the v1 files spell it (whichever backend reported it, or the recipe's eval dtype)
    dtype = "torch." + str(first_config.get("model_dtype") or metrics["dtype"]).removeprefix("torch.")
    params = first_config.get("model_num_parameters")
    width = DTYPE_BYTES.get(dtype.removeprefix("torch."))
    v1_names = {t["name"] for t in config["suites"].get(SUITE, [])}
    skipped = {
        name: t.get("reason", "")
        for name, t in metrics["tasks"].items()
        if name in v1_names and t.get("status") != "ok"
    }
    general = {
        "lighteval_sha": "",  # not run through lighteval: lm-eval's version is below
        "num_few_shot_default": 0,
        "num_fewshot_seeds": 1,
        "override_batch_size": metrics["batch_size"],
        "max_samples": max(limits) if limits else None,
        "job_id": "",
        "start_time": times[0] if times else None,
        "end_time": times[1] if times else None,
        "total_evaluation_time_secondes": str(times[2]) if times else "",
        # an "org/model" name, as the leaderboard's reader expects; the model itself is `model_path`
        "model_name": f"menagerie/{recipe_name}",
        "model_sha": str(first_config.get("model_sha") or ""),
        "model_dtype": dtype,
        "model_size": f"{params * width / 2**30:.2f} GB" if isinstance(params, int) and width else None,
        "model_path": metrics["model"],
        "lm_eval_version": next(
            (t.get("lm_eval_version") for t in metrics["tasks"].values() if t.get("lm_eval_version")), None
        ),
        "lm_eval_git_hash": first.get("git_hash"),
        "protocol_deviations": deviations,
        "tasks_skipped": skipped,
        "source": str(native_path),
    }
    return {"config_general": general, "results": results, "versions": versions}


def write_v1_results(config: dict, recipe_name: str, metrics_path: Path, out_file: Path) -> dict:
    from menagerie.io import atomic_open

    recipe = config["recipes"].get(recipe_name)
    if recipe is None or SUITE not in recipe["eval"]["suites"]:
        raise MenagerieError(
            f"recipe '{recipe_name}': key 'eval.suites' has no '{SUITE}': the Open LLM Leaderboard "
            f"v1 results file is written only for recipes scored on that suite"
        )
    metrics, native, native_path = load_native(metrics_path)
    data = v1_results(config, recipe_name, metrics, native, native_path, eval_times(metrics_path))
    validate_v1(data, str(out_file))
    with atomic_open(out_file) as handle:
        handle.write(json.dumps(data, indent=4, ensure_ascii=False) + "\n")
    return data
