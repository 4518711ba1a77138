"""Evaluate one model on every task of a recipe's suites (one shared evaluation: results/evals/<model key>/<suite
hash>/, the same for every recipe with that model and those suite settings, menagerie.workflow.RecipePaths.eval_dir)."""

from __future__ import annotations

import gc
import hashlib
import json
import time
from pathlib import Path

from menagerie import formats
from menagerie.io import atomic_open
from menagerie.provenance import file_hashes, stage_record


def suite_tasks(config: dict, recipe: dict) -> list[dict]:
    return [task for suite in recipe["eval"]["suites"] for task in config["suites"][suite]]


def release_memory() -> None:
    """After the evaluated model is dropped, before the judges load (vLLM engines hold most of a GPU's memory)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def evaluate_model(
    config: dict,
    recipe_name: str,
    model_dir: Path,
    key: str,
    data_files: dict[str, Path],
    out_file: Path,
    work_dir: Path,
    judge_loader=None,
) -> dict:
    """Write `out_file`: one entry per task (`ok` with value/stderr/n, or `skipped` with the reason). `recipe_name`:
    the recipe whose suites and eval settings are used; `key`: what the evaluation is recorded as (its
    '<model key>/<suite hash>', or a label such as 'final').

    Judged tasks run in two phases: the model's outputs while it is loaded, then (model freed) each judge's
    scores; `judge_loader` replaces judged.load_judge (tests)."""
    from menagerie.evaluate import harness, humaneval, judged

    recipe = config["recipes"][recipe_name]
    settings = recipe["eval"]
    template = formats.chat_template_jinja(recipe["chat_format"]) or ""
    tasks: dict[str, dict] = {}
    native: dict[str, dict] = {}
    with stage_record(
        "evaluate",
        out_file.with_suffix(".provenance.json"),
        recipe=recipe_name,
        key=key,
        model=str(model_dir),
        input_sha256=file_hashes({k: v for k, v in data_files.items()}),
    ) as rec:
        seconds: dict[str, float] = {}  # where the stage's time goes: import + engine start-up, each task
        started = time.perf_counter()
        lm = harness.load_lm(
            model_dir,
            recipe["chat_format"],
            settings["backend"],
            settings["dtype"],
            settings["batch_size"],
            seed=settings["seed"],
            gpus=settings["resources"].get("gpus", 1),
        )
        seconds["load_model"] = round(time.perf_counter() - started, 2)
        pending: list[judged.Prepared] = []
        for task in suite_tasks(config, recipe):
            started = time.perf_counter()
            if task["harness"] == "lm-eval":
                data_file = data_files.get(task["dataset"]) if task.get("dataset") else None
                tasks[task["name"]], native[task["name"]] = harness.run_lm_eval_task(
                    lm, task, data_file, settings["seed"]
                )
            elif task["harness"] == "humaneval":
                tasks[task["name"]] = humaneval.run_humaneval(
                    lm, task, settings["batch_size"], settings["seed"], work_dir / task["name"]
                )
            else:
                try:
                    prepared = judged.prepare(config, task)
                except judged.Skipped as skip:
                    tasks[task["name"]] = skip.entry
                    continue
                judged.generate(lm, prepared)
                pending.append(prepared)
            seconds[task["name"]] = round(time.perf_counter() - started, 2)
        backend_settings = getattr(lm, "engine_settings", None)
        if pending:
            lm = None
            release_memory()
            for prepared in pending:
                started = time.perf_counter()
                try:
                    tasks[prepared.task["name"]] = judged.score(
                        prepared, settings["seed"], loader=judge_loader or judged.load_judge
                    )
                except judged.Skipped as skip:
                    tasks[prepared.task["name"]] = skip.entry
                seconds[f"judge:{prepared.task['name']}"] = round(time.perf_counter() - started, 2)
        result = {
            "recipe": recipe_name,
            "key": key,
            "model": str(model_dir),
            "backend": settings["backend"],
            "backend_settings": backend_settings,
            "library_versions": harness.library_versions(),
            "dtype": settings["dtype"],
            "batch_size": settings["batch_size"],
            "seed": settings["seed"],
            "chat_format": recipe["chat_format"],
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(),
            "tasks": tasks,
        }
        rec["tasks"] = {k: v.get("value", v["status"]) for k, v in tasks.items()}
        rec["seconds"] = seconds
    (work_dir).mkdir(parents=True, exist_ok=True)
    with atomic_open(work_dir / "lm_eval_results.json") as handle:
        json.dump(native, handle, indent=1, sort_keys=True, default=str)
    result["lm_eval_results"] = str(work_dir / "lm_eval_results.json")
    with atomic_open(out_file) as handle:
        json.dump(result, handle, indent=2, sort_keys=True)
    return result
