"""Start-up and wall time of a tiny twin's evaluate job, per backend, cold and warm, against a baseline in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_stage.py [--recipe tiny-tulu2-dpo] [--backends vllm hf]
                                                          [--startup-only] [--modes baseline cold warm]

Modes, run in this order for each backend (each a fresh process, as Snakemake starts one per job):
  baseline  every module compiled from source in every process (PYTHONPYCACHEPREFIX points where nothing can be
            written): the evaluate job before menagerie.bytecode, on a machine with PYTHONDONTWRITEBYTECODE set or a
            read-only environment;
  cold      an empty bytecode cache (the first evaluate job of a fresh clone: a twin's base evaluation);
  warm      the cache the cold run filled (every later job: the twin's final evaluation).
The scikit-learn cut (harness.import_transformers_without_sklearn) is in all three modes; README "Performance" has
its share from `python -X importtime`.

Default: a real Snakemake run in a scratch copy of the workflow (.cache/bench/eval_stage; the checkout's results/
stay untouched). First everything the evaluate rule needs (the SmolLM2-135M conversion, the suite's datasets),
untimed; then per backend and mode `snakemake <the base model's evaluation of bench-<backend>>` (results/evals/
<model key>/<suite hash>/metrics.json of the recipe with only `eval.backend` changed: its base model on its whole suite). Printed per job: the Snakemake command's seconds, the
stage's wall time, its `load_model` seconds (imports + tokenizer + engine or from_pretrained), each task's seconds,
the scores (identical across modes), and the CPU seconds of the job's processes. `--startup-only`: just the
evaluate job's start-up (`harness.load_lm` in a fresh process, imports included) on the SmolLM2 copy that
bench/generation_speed.py uses; seconds.

Ratios printed at the end compare each mode with the same backend's baseline in the same run. The 1-minute load
average is printed beside every figure: on 2 shared cores compare ratios (and CPU seconds), not absolute seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from workflow_copy import SNAKEMAKE, copy_workflow  # noqa: E402

MODES = ("baseline", "cold", "warm")
STARTUP = """
import json, os, sys, time
start = time.perf_counter()
from menagerie.bytecode import cache_bytecode
cache_bytecode()
from pathlib import Path
from menagerie.evaluate import harness
lm = harness.load_lm(Path(sys.argv[1]), "tulu", sys.argv[2], "float32", 16, seed=0)
print(json.dumps({"load_model_s": round(time.perf_counter() - start, 1)}))
"""


def overlay(recipe: str, backends: list[str]) -> str:
    return "recipes:\n" + "".join(
        f"  bench-{b}:\n    extends: {recipe}\n    eval: {{backend: {b}}}\n" for b in backends
    )


def base_metrics(work: Path, recipe: str) -> str:
    """The metrics.json of the recipe's base-model evaluation (menagerie.workflow.RecipePaths.evaluations)."""
    from menagerie.config import load_config
    from menagerie.workflow import RecipePaths

    config = load_config(work / "config.yaml", work / "bench.yaml")
    return RecipePaths(config).evaluations(recipe)["base"]


def load() -> float:
    return round(os.getloadavg()[0], 2)


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def mode_env(env: dict, mode: str, caches: Path, backend: str) -> dict:
    """The environment of one mode: where (and whether) the job's bytecode is cached."""
    if mode == "baseline":
        return {**env, "PYTHONPYCACHEPREFIX": "/dev/null/no-bytecode-cache", "PYTHONDONTWRITEBYTECODE": "1"}
    cache = caches / backend
    if mode == "cold" and cache.exists():
        shutil.rmtree(cache)
    # what menagerie.bytecode.cache_bytecode sets up in the stage script, here in the bench's own folder
    return {**{k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}, "PYTHONPYCACHEPREFIX": str(cache)}


def snakemake(work: Path, env: dict, targets: list[str], *flags: str) -> float:
    """Seconds of one Snakemake run (targets first: --configfile and --omit-from take several values)."""
    start = time.perf_counter()
    run = subprocess.run(
        [str(SNAKEMAKE), *targets, "--cores", "2", "--configfile", "bench.yaml", *flags],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    if run.returncode:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted((work / "logs").rglob("*.log")))
        raise SystemExit(f"snakemake {' '.join(targets + list(flags))} failed:\n{run.stderr[-3000:]}\n{logs}")
    return time.perf_counter() - start


def job(work: Path, env: dict, target: str) -> dict:
    out = work / target
    for stale in (out, out.with_suffix(".provenance.json")):
        stale.unlink(missing_ok=True)
    cpu = child_cpu()
    seconds = snakemake(work, env, [target])
    record = json.loads(out.with_suffix(".provenance.json").read_text())
    metrics = json.loads(out.read_text())
    return {
        "snakemake_s": round(seconds, 1),
        "stage_wall_s": record["wall_time_s"],
        "load_model_s": record["seconds"]["load_model"],
        "tasks_s": {k: v for k, v in record["seconds"].items() if k != "load_model"},
        "cpu_s": round(child_cpu() - cpu, 1),
        "scores": {k: v.get("value", v["status"]) for k, v in metrics["tasks"].items()},
    }


def startup(env: dict, backend: str, model_dir: Path) -> dict:
    cpu = child_cpu()
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-c", STARTUP, str(model_dir), backend], env=env, capture_output=True, text=True, cwd=REPO
    )
    if run.returncode:
        raise SystemExit(f"start-up of {backend} failed:\n{run.stderr[-3000:]}")
    inner = json.loads(run.stdout.strip().splitlines()[-1])
    return {**inner, "process_s": round(time.perf_counter() - started, 1), "cpu_s": round(child_cpu() - cpu, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="tiny-tulu2-dpo")
    parser.add_argument("--backends", nargs="+", choices=["vllm", "hf"], default=["vllm", "hf"])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--startup-only", action="store_true")
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "bench" / "eval_stage")
    args = parser.parse_args()

    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HOME": str(args.work / "hf-home"),
        "XDG_CACHE_HOME": str(args.work / "xdg-cache"),
    }
    caches = args.work / "pycache"
    if args.startup_only:
        from generation_speed import find_model

        model_dir = find_model()
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        run_one = lambda backend, mode_environ: startup(mode_environ, backend, model_dir)  # noqa: E731
        print(json.dumps({"startup_only": True, "model": str(model_dir), "loadavg": load()}), flush=True)
    else:
        work = copy_workflow(args.work / "project", share_downloads=True)
        (work / "bench.yaml").write_text(overlay(args.recipe, args.backends))
        targets = {b: base_metrics(work, f"bench-{b}") for b in args.backends}
        prepared = snakemake(work, env, list(targets.values()), "--omit-from", "evaluate")
        print(json.dumps({"recipe": args.recipe, "prepare_s": round(prepared, 1), "loadavg": load()}), flush=True)
        run_one = lambda backend, mode_environ: job(work, mode_environ, targets[backend])  # noqa: E731

    results: dict[str, dict[str, dict]] = {b: {} for b in args.backends}
    for backend in args.backends:
        for mode in [m for m in MODES if m in args.modes]:
            before = load()
            figures = run_one(backend, mode_env(env, mode, caches, backend))
            results[backend][mode] = figures
            print(
                json.dumps(
                    {"backend": backend, "mode": mode, **figures, "loadavg_before": before, "loadavg_after": load()}
                ),
                flush=True,
            )
    keys = ["load_model_s", "cpu_s"] + ([] if args.startup_only else ["stage_wall_s"])
    for backend, by_mode in results.items():
        base = by_mode.get("baseline")
        if base:
            print(
                json.dumps(
                    {
                        "backend": backend,
                        "baseline_over": {
                            mode: {k: round(base[k] / figures[k], 2) for k in keys if figures.get(k)}
                            for mode, figures in by_mode.items()
                            if mode != "baseline"
                        },
                    }
                ),
                flush=True,
            )
    if {"vllm", "hf"} <= set(results) and not args.startup_only:
        best = {b: min(f["stage_wall_s"] for f in by.values()) for b, by in results.items()}
        print(json.dumps({"stage_wall_s_best": best, "hf_over_vllm": round(best["hf"] / best["vllm"], 2)}))


if __name__ == "__main__":
    main()
