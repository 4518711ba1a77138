"""Merge stage: fold a LoRA/QLoRA adapter into a model (its own base, or another fine-tune of it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import menagerie  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from menagerie.cli_support import load_resolved_config, run_cli
from menagerie.merge import merge_adapter
from menagerie.workflow import RecipePaths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--adapter", required=True, type=Path)
    parser.add_argument("--into", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--label", default="merged model")
    parser.add_argument("--config", help="resolved config (with --recipe/--stage: QLoRA dequantization settings)")
    parser.add_argument("--recipe")
    parser.add_argument("--stage", choices=["sft", "dpo"])
    args = parser.parse_args(argv)
    dequantize = combine = None
    if args.config and args.recipe and args.stage:
        paths = RecipePaths(load_resolved_config(args.config))
        dequantize = paths.merge_dequantize(args.recipe, args.stage)
        combine = paths.merge_combination(args.recipe, args.stage)
    merge_adapter(args.adapter, args.into, args.out, args.dtype, args.label, dequantize, combine)


if __name__ == "__main__":
    run_cli(main)
