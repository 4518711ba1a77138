"""eval.json: a recipe's scores, its base model's scores, the published numbers, deltas and provenance."""

from __future__ import annotations

import json
import math
from pathlib import Path


from menagerie import schemas
from menagerie.config import RECIPE_REF_PREFIX, recipe_hash
from menagerie.io import sha256_file
from menagerie.overrides import recipe_overrides
from menagerie.provenance import environment
from menagerie.verdict import average_stderr, judge, overall, recipe_tolerance, task_verdicts


def validate_eval(entry: dict, where: str = "eval.json") -> None:
    schemas.check(entry, "eval.schema.json", where)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def compare(final: dict, base: dict | None) -> dict | None:
    """Difference final - base and its z score (independent standard errors)."""
    if not base or base.get("status") != "ok" or final.get("status") != "ok":
        return None
    delta = final["value"] - base["value"]
    se = math.sqrt((final.get("stderr") or 0) ** 2 + (base.get("stderr") or 0) ** 2)
    return {"delta": delta, "z": delta / se if se > 0 else None}


def declared_average(config: dict, recipe: dict) -> tuple[str, dict] | None:
    """(name, declaration) of the paper's average that applies to `recipe`: one over a suite the recipe evaluates,
    whose `published_key` the recipe's published metrics hold (the first declared, if several)."""
    metrics = (recipe.get("published") or {}).get("metrics") or {}
    for name, average in (config.get("averages") or {}).items():
        if average["suite"] in recipe["eval"]["suites"] and metrics.get(average["published_key"]) is not None:
            return name, average
    return None


def average_as_published(
    name: str, average: dict, tasks: dict, base_tasks: dict | None, published_value: float
) -> dict:
    """The paper's average recomputed from our task results: each declared task's value (inverted where the paper
    inverted it), their mean only when every one ran, and its delta to the paper's number; else which are missing."""
    parts, missing = [], []
    for part in average["tasks"]:
        result = tasks.get(part["task"]) or {}
        counted = _counted(result, part)
        if counted is None:
            missing.append(
                {
                    "task": part["task"],
                    "reason": result.get("reason")
                    or ("not evaluated" if not result else f"status {result.get('status')}"),
                }
            )
        parts.append(
            {
                "task": part["task"],
                "metric": result.get("metric") or part.get("metric"),
                "num_fewshot": result.get("num_fewshot", part.get("num_fewshot")),
                "invert": part.get("invert"),
                "value": result.get("value"),
                "counted": counted,
            }
        )
    value = None if missing else _mean([p["counted"] for p in parts])
    base_counted = [_counted((base_tasks or {}).get(p["task"]) or {}, p) for p in average["tasks"]]
    base_value = _mean(base_counted) if base_tasks and None not in base_counted else None
    return {
        "name": name,
        "source": average["source"],
        "suite": average["suite"],
        "published_key": average["published_key"],
        "tasks": parts,
        "value": value,
        "missing": missing,
        "base_value": base_value,
        "published": published_value,
        "delta": value - published_value if value is not None else None,
    }


def _counted(result: dict, part: dict) -> float | None:
    if result.get("status") != "ok" or not isinstance(result.get("value"), (int, float)):
        return None
    return part["invert"] - result["value"] if part.get("invert") is not None else result["value"]


def _contamination_summary(stage_files: dict[str, Path]) -> dict | None:
    """Summary of results/<recipe>/data/contamination.json (beside the data reports), with its sha256s."""
    data_reports = [Path(p) for name, p in stage_files.items() if name.startswith("data.")]
    path = data_reports[0].parent / "contamination.json" if data_reports else None
    if path is None or not path.exists():
        return None
    report = json.loads(path.read_text())
    return {**report["summary"], "sha256": report.get("sha256", {})}


def base_model_name(config: dict, recipe_name: str) -> str:
    """The model eval.json's `base` is: `eval.base_model`, else the prepared model at the root of `recipe:` refs."""
    recipe = config["recipes"][recipe_name]
    if recipe["eval"].get("base_model"):
        return recipe["eval"]["base_model"]
    model = recipe["model"]
    while model.startswith(RECIPE_REF_PREFIX):
        model = config["recipes"][model[len(RECIPE_REF_PREFIX) :]]["model"]
    return model


def dpo_rewards(stages: dict) -> dict | None:
    """DPO's implicit-reward accuracy and margin (chosen - rejected) at the end of training, on the last train
    logging window and on the validation pairs (trl's rewards/* and eval_rewards/*), from the dpo stage record."""
    metrics = (stages.get("dpo") or {}).get("metrics") or {}
    if not metrics:
        return None
    return {
        "train": {
            "reward_accuracy": metrics.get("final_reward_accuracy"),
            "reward_margin": metrics.get("final_reward_margin"),
        },
        "validation": {
            "reward_accuracy": metrics.get("eval_reward_accuracy"),
            "reward_margin": metrics.get("eval_reward_margin"),
        },
    }


def _per_stage(stages: dict, key: str) -> dict:
    """One field of each stage record's `environment` (menagerie.provenance.environment), by stage name."""
    return {n: r["environment"][key] for n, r in stages.items() if key in (r.get("environment") or {})}


def add_verdicts(config: dict, recipe_name: str, entry: dict) -> None:
    """Per-task `verdict` against the paper and the overall `verdict` (menagerie.verdict), in place."""
    for name, verdict in task_verdicts(config, entry["tasks"]).items():
        entry["tasks"][name]["verdict"] = verdict
    declared = entry.get("average_as_published") or {}
    average = None
    if declared.get("value") is not None:  # the paper's own average, only when every task of it ran
        ran = [entry["tasks"][part["task"]] for part in declared["tasks"]]
        tolerance = recipe_tolerance(config, [declared["suite"]])["points"]
        average = judge(declared["value"], declared["published"], average_stderr(ran), tolerance)
    entry["verdict"] = overall(entry["tasks"], average)


def evaluation_links(files: dict[str, Path | str | None], root: Path = Path(".")) -> dict:
    """eval.json's `evaluations`: path (as given, relative to the project `root`) and sha256 of the shared
    metrics.json each role's scores were read from."""
    return {role: {"path": str(path), "sha256": sha256_file(root / path)} for role, path in files.items() if path}


def build_eval_entry(
    config: dict,
    recipe_name: str,
    final: dict,
    base: dict | None,
    stage_files: dict[str, Path],
    final_model: str,
    start: dict | None = None,
    start_model: str | None = None,
    evaluations: dict | None = None,
) -> dict:
    """`start`: metrics of the model the last training stage started from (DPO: its SFT model), for Δsft;
    `evaluations`: where final/base/start were read from (evaluation_links)."""
    recipe = config["recipes"][recipe_name]
    suites = {t["name"]: t for s in recipe["eval"]["suites"] for t in config["suites"][s]}
    suite_of = {t["name"]: s for s in recipe["eval"]["suites"] for t in config["suites"][s]}
    published = recipe.get("published")
    tasks = {}
    for name, result in final["tasks"].items():
        entry = dict(result)
        entry["suite"] = suite_of[name]  # the leaderboard groups tasks (and draws one chart) per suite
        base_result = base["tasks"].get(name) if base else None
        entry["base"] = base_result
        diff = compare(result, base_result)
        entry["delta_vs_base"] = diff["delta"] if diff else None
        entry["z_vs_base"] = diff["z"] if diff else None
        if start is not None:
            start_result = start["tasks"].get(name)
            entry["start"] = start_result
            diff = compare(result, start_result)
            entry["delta_vs_start"] = diff["delta"] if diff else None
            entry["z_vs_start"] = diff["z"] if diff else None
        key = suites[name].get("published_key")
        value = published["metrics"].get(key) if published and key else None
        entry["published"] = value
        entry["delta_vs_published"] = (result["value"] - value) if value is not None and "value" in result else None
        tasks[name] = entry
    ok = [t["value"] for t in tasks.values() if t["status"] == "ok"]
    base_ok = [t["value"] for t in (base or {}).get("tasks", {}).values() if t["status"] == "ok"]
    stages = {name: json.loads(Path(p).read_text()) for name, p in stage_files.items() if Path(p).exists()}
    data_sha = {}
    for name, rec in stages.items():
        for key, digest in (rec.get("input_sha256") or {}).items():
            data_sha[f"{name}:{key}"] = digest
        for key, digest in (rec.get("sha256") or {}).items():  # mixture reports
            data_sha[f"{name}:{key}"] = digest
    contamination = _contamination_summary(stage_files)
    if contamination:
        for key, digest in contamination.pop("sha256", {}).items():  # the rows training actually read
            data_sha[f"data.decontaminated:{key}"] = digest
    env = environment()
    seeds = {"eval": recipe["eval"]["seed"]}
    seeds.update({f"{s}": recipe["stages"][s]["seed"] for s in ("sft", "dpo") if recipe["stages"].get(s)})
    seeds.update({f"data.{p}": m["seed"] for p, m in recipe.get("data", {}).items()})
    entry = {
        "schema_version": 1,
        "recipe": recipe_name,
        "description": recipe.get("description", ""),
        "paper": recipe.get("paper"),
        "tiny": recipe["tiny"],
        "model": {
            "base": base_model_name(config, recipe_name),
            "final": final_model,
            **({"start": start_model or recipe["model"]} if start is not None else {}),
        },
        "evaluations": evaluations or {},
        "tasks": tasks,
        "average": _mean(ok),
        "average_as_published": None,
        "base": {"average": _mean(base_ok), "tasks": base["tasks"]} if base else None,
        "start": (
            {
                "average": _mean([t["value"] for t in start["tasks"].values() if t["status"] == "ok"]),
                "tasks": start["tasks"],
            }
            if start is not None
            else None
        ),
        "dpo": dpo_rewards(stages),
        "published": ({**published, "average_delta": None} if published else None),
        "provenance": {
            "git_commit": env["git_commit"],
            "config_hash": recipe_hash(config, recipe_name),
            "uv_lock_sha256": env["uv_lock_sha256"],
            "container": env["container"],
            "packages": env["packages"],
            "seeds": seeds,
            # every stage's own machine (GPUs, driver/CUDA/cuDNN/NCCL, SLURM job and nodes) and image, not this job's
            "hardware": _per_stage(stages, "hardware"),
            "images": _per_stage(stages, "image"),
            "stage_commits": _per_stage(stages, "git_commit"),
            "wall_time_s": {n: r["wall_time_s"] for n, r in stages.items() if "wall_time_s" in r},
            "data_sha256": data_sha,
            "eval_settings": {
                k: final[k] for k in ("backend", "dtype", "batch_size", "chat_format", "chat_template_sha256", "seed")
            }
            | {
                "backend_settings": final.get("backend_settings"),
                # lm-eval's few-shot sampler is seeded with the eval seed (harness.run_lm_eval_task)
                "fewshot_seed": final["seed"],
                "library_versions": final.get("library_versions"),
                # judged tasks scored through a package's protocol (AlpacaEval: annotator,
                # template hash, alpaca-eval version, order seed)
                "judge_protocols": {name: t["protocol"] for name, t in final["tasks"].items() if t.get("protocol")},
            },
            "stages": {n: {k: v for k, v in r.items() if k not in ("environment",)} for n, r in stages.items()},
            "contamination": contamination,
            "overrides": recipe_overrides(config, recipe_name),
        },
    }
    declared = declared_average(config, recipe)
    if declared:  # Δpaper only on the paper's own average, never on our all-task mean
        name, average = declared
        entry["average_as_published"] = average_as_published(
            name, average, final["tasks"], (base or {}).get("tasks"), published["metrics"][average["published_key"]]
        )
        if start is not None:
            entry["average_as_published"]["start_value"] = average_as_published(
                name, average, start["tasks"], None, published["metrics"][average["published_key"]]
            )["value"]
        entry["published"]["average_delta"] = entry["average_as_published"]["delta"]
    add_verdicts(config, recipe_name, entry)
    validate_eval(entry, f"results/{recipe_name}/eval.json")
    return entry
