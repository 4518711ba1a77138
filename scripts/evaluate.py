"""Evaluation stage: score one model on the recipe's suites, or assemble eval.json, or the leaderboard.

  evaluate.py model --config C --recipe R --model DIR --which final|base --data NAME=PATH ... --out metrics.json
  evaluate.py report --config C --recipe R --final metrics.json [--base metrics.json] --stage NAME=FILE ... --out eval.json
  evaluate.py leaderboard --json OUT --md OUT eval.json ...
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

from menagerie.cli_support import load_resolved_config, recipe_from, run_cli
from menagerie.errors import ConfigError


def pairs(values: list[str], flag: str) -> dict[str, Path]:
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            raise ConfigError(f"{flag} expects NAME=PATH, got {value!r}")
        out[name] = Path(path)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    model = sub.add_parser("model")
    report = sub.add_parser("report")
    for p in (model, report):
        p.add_argument("--config", required=True)
        p.add_argument("--recipe", required=True)
        p.add_argument("--out", required=True, type=Path)
    model.add_argument("--model", required=True, type=Path)
    model.add_argument("--which", required=True, choices=["final", "base"])
    model.add_argument("--data", nargs="*", default=[])
    model.add_argument("--work", required=True, type=Path)
    report.add_argument("--final", required=True, type=Path)
    report.add_argument("--base", type=Path)
    report.add_argument("--final-model", required=True)
    report.add_argument("--stage", nargs="*", default=[])
    board = sub.add_parser("leaderboard")
    board.add_argument("--json", required=True, type=Path)
    board.add_argument("--md", required=True, type=Path)
    board.add_argument("evals", nargs="*", type=Path)
    args = parser.parse_args(argv)

    if args.command == "leaderboard":
        from menagerie.leaderboard import write_leaderboard

        write_leaderboard(args.evals, args.json, args.md)
        return
    config = load_resolved_config(args.config)
    recipe_from(config, args.recipe)
    if args.command == "model":
        from menagerie.evaluate.run import evaluate_model

        evaluate_model(config, args.recipe, args.model, args.which, pairs(args.data, "--data"), args.out, args.work)
        return
    from menagerie.io import atomic_open
    from menagerie.report import build_eval_entry

    final = json.loads(args.final.read_text())
    base = json.loads(args.base.read_text()) if args.base else None
    entry = build_eval_entry(config, args.recipe, final, base, pairs(args.stage, "--stage"), args.final_model)
    with atomic_open(args.out) as handle:
        json.dump(entry, handle, indent=2, sort_keys=True)


if __name__ == "__main__":
    run_cli(main)
