"""Memory and time plan of recipes: `python scripts/plan.py [RECIPE ...]` (default: every real recipe).

Prints one table row per stage (bytes per device for weights, gradients, optimizer state, DPO reference,
activations; the named GPU's memory; the expected training time) and exits 1 when a stage cannot fit its declared
resources or its runtime_min is below the estimate. The formulas and assumptions: menagerie/plan.py, README "Planner".
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from menagerie.cli_support import run_cli  # noqa: E402
from menagerie.config import load_config  # noqa: E402
from menagerie.plan import assumptions, plan_recipe, refusal, runtime_problem, table  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", help="recipe names (default: every recipe without `tiny: true`)")
    parser.add_argument("--config", nargs="+", default=["config.yaml"], help="config files, later ones override")
    args = parser.parse_args(argv)
    config = load_config(*args.config)
    names = args.recipes or [n for n, r in config["recipes"].items() if not r.get("tiny")]
    for name in names:
        if name not in config["recipes"]:
            from menagerie.errors import ConfigError

            raise ConfigError(f"recipe '{name}' is not defined (known recipes: {', '.join(sorted(config['recipes']))})")
    estimates = [est for name in names for est in plan_recipe(config, name)]
    print(table(estimates))
    print()
    print(assumptions())
    for note in [f"{e.recipe} {e.stage}: {n}" for e in estimates for n in e.notes]:
        print(f"note: {note}")
    problems = [refusal(e) for e in estimates if not e.fits] + [p for e in estimates if (p := runtime_problem(e))]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    run_cli(main)
