"""The `menagerie` command: the user's entry points, thin over the package and Snakemake.

  menagerie run [RECIPE] [-- SNAKEMAKE_ARGS]      build results/<recipe>/eval.json and the leaderboard (= make run)
  menagerie dryrun [RECIPE] [-- SNAKEMAKE_ARGS]   print the jobs a build would run (snakemake -n)
  menagerie plan [RECIPE ...] [--config FILE ...] memory and time per stage; exit 1 when a stage cannot fit
  menagerie verify RECIPE|DIR                     recompute a built recipe's hashes against its provenance
  menagerie leaderboard [--results DIR]           the leaderboard page again from every built eval.json
  menagerie report [RECIPE] [--out FILE]          snakemake --report of a built recipe: loss curves, leaderboard

Run it in the project directory (beside the Snakefile). Without the installed script: `python -m menagerie ...`.
The stage scripts (scripts/<stage>.py) stay what the rules call. User errors print `error: ...` and exit 1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from menagerie.cli_support import error_line
from menagerie.errors import ConfigError, MenagerieError, MissingInputError

DEFAULT_RECIPE = "tiny-tulu2-dpo"  # the Makefile's RECIPE default: the tiny twin that runs on a laptop


def in_project() -> None:
    if not Path("Snakefile").is_file():
        raise MissingInputError(f"no Snakefile in {Path.cwd()}: run `menagerie run|dryrun` in the project directory")


def snakemake(args: Sequence[str]) -> int:
    """Snakemake of this environment on the Snakefile of the current directory; its exit status."""
    in_project()
    return subprocess.run([sys.executable, "-m", "snakemake", *args]).returncode


def cmd_run(args: argparse.Namespace) -> int:
    """What `make run` does (scripts/run.py): the project's run lock, stale Snakemake locks removed, then Snakemake."""
    from menagerie import runlock

    in_project()
    command = runlock.snakemake_argv(
        str(Path(sys.executable).with_name("snakemake")), args.recipe, args.cores, args.configfile, args.snakemake
    )
    runlock.acquire(Path.cwd())  # held by Snakemake itself after the exec below
    runlock.clear_stale_locks(Path.cwd())
    sys.stdout.flush()
    os.execv(command[0], command)
    return 0  # not reached


def cmd_dryrun(args: argparse.Namespace) -> int:
    configfile = [f"--configfile={args.configfile}"] if args.configfile else []
    return snakemake(["-n", "--cores", args.cores, f"results/{args.recipe}/eval.json", *configfile, *args.snakemake])


def cmd_plan(args: argparse.Namespace) -> int:
    from menagerie.config import load_config
    from menagerie.plan import assumptions, job_chain_note, plan_recipe, refusal, runtime_problem, table

    config = load_config(*args.config)
    names = args.recipes or [n for n, r in config["recipes"].items() if not r.get("tiny")]
    for name in names:
        if name not in config["recipes"]:
            raise ConfigError(f"recipe '{name}' is not defined (known recipes: {', '.join(sorted(config['recipes']))})")
    estimates = [est for name in names for est in plan_recipe(config, name)]
    print(table(estimates))
    print()
    print(assumptions())
    chains = [(e, n) for e in estimates if (n := job_chain_note(e))]
    for note in [f"{e.recipe} {e.stage}: {n}" for e in estimates for n in e.notes] + [
        f"{e.recipe} {e.stage}: {n}" for e, n in chains
    ]:
        print(f"note: {note}")
    problems = [refusal(e) for e in estimates if not e.fits] + [p for e in estimates if (p := runtime_problem(e))]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def cmd_verify(args: argparse.Namespace) -> int:
    from menagerie.verify import verify_recipe

    recipe_dir = Path(args.recipe)
    if not recipe_dir.is_dir() and (Path("results") / args.recipe).is_dir():
        recipe_dir = Path("results") / args.recipe  # a recipe name
    if not recipe_dir.is_dir():
        raise MissingInputError(
            f"{args.recipe} is neither a built recipe's directory nor a recipe under results/ "
            f"(build it with `menagerie run {args.recipe}`)"
        )
    checks = verify_recipe(recipe_dir)
    bad = [c for c in checks if c.status != "ok"]
    for c in bad:
        print(f"{c.status.upper()}: {c.record} {c.key}: {c.detail}", file=sys.stderr)
    print(f"verify {recipe_dir}: {len(checks) - len(bad)}/{len(checks)} hashes match")
    return 1 if bad else 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from menagerie.leaderboard import write_leaderboard

    results = Path(args.results)
    evals = sorted(results.glob("*/eval.json"))
    if not evals:
        raise MissingInputError(f"no {results}/*/eval.json: build a recipe first (`menagerie run`)")
    rows = write_leaderboard(
        evals,
        results / "leaderboard.json",
        results / "leaderboard.md",
        results / "leaderboard.html",
        results / "leaderboard",
    )
    print(f"leaderboard: {len(rows)} rows from {len(evals)} eval.json -> {results}/leaderboard.{{md,json,html}}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Snakemake's HTML report of a built recipe (the `report()` outputs of rules/train.smk and rules/leaderboard.smk,
    rules/report/*.rst): one self-contained page, results/<recipe>/report.html by default (a .zip when --out ends so)."""
    in_project()
    eval_json = Path("results") / args.recipe / "eval.json"
    if not eval_json.is_file():
        raise MissingInputError(
            f"{eval_json} does not exist: the report shows a built run, build it first "
            f"(`make run RECIPE={args.recipe}`)"
        )
    out = Path(args.out) if args.out else Path("results") / args.recipe / "report.html"
    configfile = [f"--configfile={args.configfile}"] if args.configfile else []
    code = snakemake(["--cores=1", f"--report={out}", *configfile, f"--config=recipe={args.recipe}", *args.snakemake])
    if code == 0:
        print(f"report: {out}")
    return code


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="menagerie", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = top.add_subparsers(dest="command", required=True)
    for name, fn, helptext in (
        ("run", cmd_run, "build a recipe's eval.json and the leaderboard (snakemake)"),
        ("dryrun", cmd_dryrun, "the jobs a build would run (snakemake -n)"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("recipe", nargs="?", default=DEFAULT_RECIPE, help=f"recipe name (default {DEFAULT_RECIPE})")
        p.add_argument("--cores", default="all")
        p.add_argument("--configfile", default=None, help="a YAML config merged over config.yaml")
        p.add_argument("snakemake", nargs=argparse.REMAINDER, help="after `--`: passed to snakemake")
        p.set_defaults(fn=fn)
    p = sub.add_parser("plan", help="memory and time per stage; exit 1 when a stage cannot fit")
    p.add_argument("recipes", nargs="*", help="recipe names (default: every recipe without `tiny: true`)")
    p.add_argument("--config", nargs="+", default=["config.yaml"], help="config files, later ones override")
    p.set_defaults(fn=cmd_plan)
    p = sub.add_parser("verify", help="recompute a built recipe's hashes against its provenance")
    p.add_argument("recipe", help="recipe name (results/<recipe>) or a built recipe's directory")
    p.set_defaults(fn=cmd_verify)
    p = sub.add_parser("report", help="snakemake --report of a built recipe (loss curves, leaderboard)")
    p.add_argument("recipe", nargs="?", default=DEFAULT_RECIPE, help=f"recipe name (default {DEFAULT_RECIPE})")
    p.add_argument("--out", default=None, help="the report file (default results/<recipe>/report.html)")
    p.add_argument("--configfile", default=None, help="a YAML config merged over config.yaml (the run's CONFIG)")
    p.add_argument("snakemake", nargs=argparse.REMAINDER, help="after `--`: passed to snakemake")
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("leaderboard", help="the leaderboard page again from every built eval.json")
    p.add_argument("--results", default="results")
    p.set_defaults(fn=cmd_leaderboard)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "snakemake", None) and args.snakemake[0] == "--":
        args.snakemake = args.snakemake[1:]
    try:
        return args.fn(args)
    except MenagerieError as exc:
        print(error_line(exc), file=sys.stderr)
        return 1
