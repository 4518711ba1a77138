"""Reproduction bundles (menagerie.bundle, menagerie.check).

bundle.py build --recipe R [--with-weights] [--configfile overlay.yaml ...]  results/R/bundle/R-<commit>.tar.gz
bundle.py check BUNDLE [--model DIR] [--tasks a,b] [--configfile overlay.yaml ...]
    config: config.yaml, with the overlays on top (as `snakemake --configfile` adds them)
    exit 0 when nothing fails (warnings are printed), 1 otherwise
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import menagerie  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from menagerie.cli_support import run_cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build")
    build.add_argument("--recipe", required=True)
    build.add_argument("--with-weights", action="store_true", help="also bundle the model weights")
    build.add_argument("--out-dir", type=Path, help="default: results/<recipe>/bundle")
    check = sub.add_parser("check")
    check.add_argument("bundle", type=Path)
    check.add_argument("--model", type=Path, help="the final model directory: re-run the evaluation")
    check.add_argument("--tasks", default="", help="comma-separated subset of tasks to re-run")
    for p in (build, check):
        p.add_argument("--configfile", action="append", default=[], help="config overlays on top of config.yaml")
    args = parser.parse_args(argv)

    from menagerie.config import load_config

    config = load_config("config.yaml", *args.configfile)
    if args.command == "build":
        from menagerie.bundle import build_bundle

        out = build_bundle(Path("."), config, args.recipe, args.out_dir, args.with_weights)
        print(f"bundle: {out}  ({out.stat().st_size / 1e6:.1f} MB; sha256 in {out.name}.sha256)")
        return 0
    from menagerie.check import check_bundle

    findings = check_bundle(args.bundle, config, args.model, Path("."), [t for t in args.tasks.split(",") if t] or None)
    for finding in findings:
        print(finding.line())
    failed = [f for f in findings if f.level == "fail"]
    warned = [f for f in findings if f.level == "warn"]
    print(f"check {args.bundle}: {'FAILED' if failed else 'passed'} ({len(failed)} failed, {len(warned)} warnings)")
    return 1 if failed else 0


if __name__ == "__main__":
    run_cli(main)
