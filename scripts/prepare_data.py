"""Data stage CLI: materialize one configured dataset, or build a recipe's sft/dpo mixture.

  prepare_data.py materialize --config CONFIG.json --dataset NAME --out PATH
  prepare_data.py mixture --config CONFIG.json --recipe NAME --part sft|dpo --raw NAME=PATH [...]
                          --train OUT --validation OUT --report OUT
  prepare_data.py contamination --config CONFIG.json --recipe NAME --inputs PART=PATH eval:DATASET=PATH [...]
                                --report contamination.json --out-dir DIR [--workers N]
                                (writes DIR/<part>.jsonl)

CONFIG.json is the fully resolved config the workflow dumps. User errors print `error: ...` and exit 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

try:
    import menagerie  # noqa: F401  (normally installed editable)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from menagerie.cli_support import load_resolved_config, name_paths, run_cli
from menagerie.data.mixture import build_mixture
from menagerie.data.sources import materialize_dataset
from menagerie.errors import ConfigError
from menagerie.io import write_json, write_jsonl


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    mat = sub.add_parser("materialize", help="write a dataset's raw rows as jsonl")
    mat.add_argument("--config", required=True)
    mat.add_argument("--dataset", required=True)
    mat.add_argument("--out", required=True, type=Path)
    mix = sub.add_parser("mixture", help="build a recipe's train/validation split and report")
    mix.add_argument("--config", required=True)
    mix.add_argument("--recipe", required=True)
    mix.add_argument("--part", required=True, choices=["sft", "dpo"])
    mix.add_argument("--raw", nargs="+", default=[], metavar="NAME=PATH")
    for flag in ("--train", "--validation", "--report"):
        mix.add_argument(flag, required=True, type=Path)
    gate = sub.add_parser("contamination", help="check training rows against eval test items, filter them")
    gate.add_argument("--config", required=True)
    gate.add_argument("--recipe", required=True)
    gate.add_argument("--inputs", nargs="+", default=[], metavar="PART=PATH")
    gate.add_argument("--report", required=True, type=Path)
    gate.add_argument("--out-dir", required=True, type=Path)
    gate.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes for the row-wise work (the job's threads; results do not depend on it)",
    )
    args = parser.parse_args(argv)

    config = load_resolved_config(args.config)
    if args.command == "materialize":
        if args.dataset not in config.get("datasets", {}):
            raise ConfigError(f"dataset '{args.dataset}' is not defined in the config")
        materialize_dataset(args.dataset, config["datasets"][args.dataset], args.out)
        return
    recipe = config.get("recipes", {}).get(args.recipe)
    if recipe is None:
        raise ConfigError(f"recipe '{args.recipe}' is not defined in the config")
    if args.command == "contamination":
        contamination(config, args)
        return
    mixture = recipe.get("data", {}).get(args.part)
    if mixture is None:
        raise ConfigError(f"recipe '{args.recipe}': key 'data.{args.part}' is not defined")
    train, val, report = build_mixture(mixture, config["datasets"], name_paths(args.raw, "--raw"), args.part)
    report["recipe"] = args.recipe
    write_jsonl(train, args.train)
    write_jsonl(val, args.validation)
    write_json(report, args.report)


def contamination(config: dict, args: argparse.Namespace) -> None:
    """The gate: read the mixtures and eval items, write the report and the kept rows per part."""
    from menagerie.data.contamination.gate import run_gate
    from menagerie.data.contamination.items import eval_items, load_part
    from menagerie.io import jsonl_sha256

    inputs = name_paths(args.inputs, "--inputs")
    evals = {k.removeprefix("eval:"): str(v) for k, v in inputs.items() if k.startswith("eval:")}
    parts = {k: load_part(v) for k, v in inputs.items() if not k.startswith("eval:")}
    items, unchecked = eval_items(config, args.recipe, evals)
    kept, report = run_gate(
        args.recipe, config["recipes"][args.recipe]["contamination"], parts, items, unchecked, workers=args.workers
    )
    for part, summary in report["summary"]["parts"].items():
        print(f"contamination {args.recipe} {part}: {summary}")
    report["sha256"] = {part: jsonl_sha256(rows) for part, rows in kept.items()}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for part, rows in kept.items():
        write_jsonl(rows, args.out_dir / f"{part}.jsonl")
    write_json(report, args.report)


if __name__ == "__main__":
    run_cli(main)
