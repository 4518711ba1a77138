"""Training stages: `train.py sft ...` (SFTTrainer) or `train.py dpo ...` (DPOTrainer) for one recipe."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import menagerie  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from menagerie.cli_support import load_resolved_config, recipe_from, run_cli


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stage", choices=["sft", "dpo"])
    parser.add_argument("--config", required=True)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--model", required=True, type=Path, help="model directory the stage starts from")
    parser.add_argument("--train", required=True, type=Path)
    parser.add_argument("--validation", type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--work", required=True, type=Path, help="checkpoint directory (kept for resume)")
    args = parser.parse_args(argv)
    config = load_resolved_config(args.config)
    recipe = recipe_from(config, args.recipe)
    validation = args.validation if args.validation and args.validation.stat().st_size else None
    if args.stage == "sft":
        from menagerie.train.sft import run_sft as run
    else:
        from menagerie.train.dpo import run_dpo as run
    run(args.recipe, recipe, args.model, args.train, validation, args.out, args.work, config=config)


if __name__ == "__main__":
    run_cli(main)
