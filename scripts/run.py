"""`make run`: build a recipe with Snakemake, one build at a time per project, restartable after kill -9.

    scripts/run.py --recipe tiny-tulu2-dpo [--cores all] [--configfile my.yaml] [-- <snakemake args and targets>]

Takes the project's run lock (a second build meanwhile is refused), removes Snakemake's locks a killed run left (only
when no workflow process of this directory is alive), then becomes Snakemake (menagerie/runlock.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

try:
    import menagerie  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from menagerie import runlock
from menagerie.cli_support import run_cli


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--cores", default="all")
    parser.add_argument("--configfile", default=None, help="a YAML config merged over config.yaml (make run CONFIG=)")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more Snakemake options and targets")
    args = parser.parse_args(argv)
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    command = runlock.snakemake_argv(snakemake, args.recipe, args.cores, args.configfile or None, extra)
    root = Path.cwd()
    runlock.acquire(root)  # held by Snakemake itself after the exec below
    runlock.clear_stale_locks(root)
    sys.stdout.flush()
    os.execv(command[0], command)


if __name__ == "__main__":
    run_cli(main)
