"""Wall time of a tiny twin's eval stage on each backend, in one run: vLLM (default) vs HF transformers.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_stage.py [--recipe tiny-tulu2-dpo] [--backends vllm hf] [--repeats 1]

A real Snakemake run in a scratch copy of the workflow (.cache/bench/eval_stage; the checkout's results/ stay
untouched): first everything the evaluate rule needs (the SmolLM2-135M conversion, the suite's datasets), untimed;
then, per backend and repeat, `snakemake results/bench-<backend>/eval/base/metrics.json`, where `bench-<backend>`
is the recipe with only `eval.backend` changed. It evaluates the recipe's base model on the recipe's whole suite:
the evaluate job is the eval stage's unit of work (a twin runs it twice, for its final and base models, which have
the same size; the report and leaderboard rules take about a second).

Printed per run: the Snakemake command's seconds, the stage process's wall time (imports included), the model
load seconds (vLLM: engine start-up; HF: from_pretrained), each task's seconds and the tasks' scores (identical
scores across backends are expected in float32); then the ratio of the stage wall times HF / vLLM. The 1-minute
load average is printed: other jobs on the 2 cores skew the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from workflow_copy import SNAKEMAKE, copy_workflow  # noqa: E402


def overlay(recipe: str, backends: list[str]) -> str:
    return "recipes:\n" + "".join(f"  bench-{b}:\n    extends: {recipe}\n    eval: {{backend: {b}}}\n"
                                  for b in backends)


def snakemake(work: Path, env: dict, targets: list[str], *flags: str) -> float:
    """Seconds of one Snakemake run (targets first: --configfile and --omit-from take several values)."""
    start = time.perf_counter()
    run = subprocess.run([str(SNAKEMAKE), *targets, "--cores", "2", "--configfile", "bench.yaml", *flags], cwd=work,
                         env=env, capture_output=True, text=True)
    if run.returncode:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted((work / "logs").rglob("*.log")))
        raise SystemExit(f"snakemake {' '.join(targets + list(flags))} failed:\n{run.stderr[-3000:]}\n{logs}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="tiny-tulu2-dpo")
    parser.add_argument("--backends", nargs="+", choices=["vllm", "hf"], default=["vllm", "hf"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "bench" / "eval_stage")
    args = parser.parse_args()

    if args.work.exists():
        shutil.rmtree(args.work)
    work = copy_workflow(args.work / "project", share_downloads=True)
    (work / "bench.yaml").write_text(overlay(args.recipe, args.backends))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HOME": str(args.work / "hf-home"), "XDG_CACHE_HOME": str(args.work / "xdg-cache")}
    targets = {b: f"results/bench-{b}/eval/base/metrics.json" for b in args.backends}
    prepared = snakemake(work, env, list(targets.values()), "--omit-from", "evaluate")
    print(json.dumps({"recipe": args.recipe, "prepare_s": round(prepared, 1),
                      "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}), flush=True)

    walls: dict[str, list[float]] = {b: [] for b in args.backends}
    for repeat in range(args.repeats):
        for backend, target in targets.items():
            out = work / target
            for stale in (out, out.with_suffix(".provenance.json")):
                stale.unlink(missing_ok=True)
            seconds = snakemake(work, env, [target])
            record = json.loads(out.with_suffix(".provenance.json").read_text())
            metrics = json.loads(out.read_text())
            walls[backend].append(record["wall_time_s"])
            print(json.dumps({"backend": backend, "repeat": repeat, "snakemake_s": round(seconds, 1),
                              "stage_wall_s": record["wall_time_s"], "stage_block_s": record["block_time_s"],
                              "seconds": record["seconds"],
                              "scores": {k: v.get("value", v["status"]) for k, v in metrics["tasks"].items()},
                              "loadavg": [round(x, 2) for x in os.getloadavg()]}), flush=True)
    if {"vllm", "hf"} <= set(walls):
        best = {b: min(w) for b, w in walls.items()}
        print(json.dumps({"stage_wall_s_best": best, "hf_over_vllm": round(best["hf"] / best["vllm"], 2)}))


if __name__ == "__main__":
    main()
