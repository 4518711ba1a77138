"""Evaluation stage: score one model on the recipe's suites, or assemble eval.json, or the leaderboard.

evaluate.py model --config C --key MODEL_KEY/SUITE_HASH --model DIR --data NAME=PATH ... --work DIR --out metrics.json
    (one shared evaluation, results/evals/<model key>/<suite hash>/: the settings of any recipe with that key)
evaluate.py report --config C --recipe R --final metrics.json [--base metrics.json] [--start metrics.json
    --start-model DIR] --stage NAME=FILE ... --out eval.json
evaluate.py leaderboard --json OUT --md OUT [--html OUT] [--charts DIR] eval.json ...
evaluate.py lm-eval-native --config C --key MODEL_KEY/SUITE_HASH --metrics metrics.json --out DIR
    (lm-eval's results_<time>.json)
evaluate.py openllm-v1 --config C --recipe R --metrics metrics.json --out results.json  (Open LLM Leaderboard v1)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    import menagerie  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from menagerie.bytecode import cache_bytecode  # noqa: E402

cache_bytecode()  # before the heavy imports (torch, vLLM, lm-eval): compiled once per checkout, not per job

from menagerie.cli_support import load_resolved_config, name_paths, recipe_from, run_cli  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    model = sub.add_parser("model")
    report = sub.add_parser("report")
    native = sub.add_parser("lm-eval-native")
    v1 = sub.add_parser("openllm-v1")
    for p in (model, report, native, v1):
        p.add_argument("--config", required=True)
        p.add_argument("--out", required=True, type=Path)
    for p in (report, v1):
        p.add_argument("--recipe", required=True)
    for p in (model, native):
        p.add_argument("--key", required=True, help="MODEL_KEY/SUITE_HASH of the shared evaluation")
    for p in (native, v1):
        p.add_argument("--metrics", required=True, type=Path, help="the evaluate stage's metrics.json")
    model.add_argument("--model", required=True, type=Path)
    model.add_argument("--data", nargs="*", default=[])
    model.add_argument("--work", required=True, type=Path)
    report.add_argument("--final", required=True, type=Path)
    report.add_argument("--base", type=Path)
    report.add_argument("--start", type=Path, help="metrics.json of the model the last training stage started from")
    report.add_argument("--start-model", help="that model's directory")
    report.add_argument("--final-model", required=True)
    report.add_argument("--stage", nargs="*", default=[])
    board = sub.add_parser("leaderboard")
    board.add_argument("--json", required=True, type=Path)
    board.add_argument("--md", required=True, type=Path)
    board.add_argument("--html", type=Path)
    board.add_argument("--charts", type=Path, help="directory for one bar chart PNG per suite")
    board.add_argument("evals", nargs="*", type=Path)
    args = parser.parse_args(argv)

    if args.command == "leaderboard":
        from menagerie.leaderboard import write_leaderboard

        write_leaderboard(args.evals, args.json, args.md, args.html, args.charts)
        return
    config = load_resolved_config(args.config)
    if args.command in ("model", "lm-eval-native"):  # the settings of the first recipe with this key
        from menagerie.workflow import RecipePaths

        model_key, _, suite_hash = args.key.partition("/")
        args.recipe = RecipePaths(config).eval_job(model_key, suite_hash)[1]
    recipe_from(config, args.recipe)
    if args.command in ("lm-eval-native", "openllm-v1"):
        from menagerie.evaluate import openllm_v1

        if args.command == "lm-eval-native":
            openllm_v1.write_native_results(config, args.recipe, args.metrics, args.out)
        else:
            openllm_v1.write_v1_results(config, args.recipe, args.metrics, args.out)
        return
    if args.command == "model":
        from menagerie.evaluate.run import evaluate_model

        data = name_paths(args.data, "--data")
        evaluate_model(config, args.recipe, args.model, args.key, data, args.out, args.work)
        return
    from menagerie.io import atomic_open
    from menagerie.report import build_eval_entry, evaluation_links

    final = json.loads(args.final.read_text())
    base = json.loads(args.base.read_text()) if args.base else None
    start = json.loads(args.start.read_text()) if args.start else None
    entry = build_eval_entry(
        config,
        args.recipe,
        final,
        base,
        name_paths(args.stage, "--stage"),
        args.final_model,
        start=start,
        start_model=args.start_model,
        evaluations=evaluation_links({"final": args.final, "base": args.base, "start": args.start}),
    )
    with atomic_open(args.out) as handle:
        json.dump(entry, handle, indent=2, sort_keys=True)


if __name__ == "__main__":
    run_cli(main)
