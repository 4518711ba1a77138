"""Memory and time plan of recipes: `python scripts/plan.py [RECIPE ...]` (default: every real recipe), the same as
`menagerie plan` (menagerie/cli.py).

Prints one table row per stage (bytes per device for weights, gradients, optimizer state, DPO reference,
activations; the named GPU's memory; the expected training time) and exits 1 when a stage cannot fit its declared
resources or its runtime_min is below the estimate. The formulas and assumptions: menagerie/plan.py, README "Planner".
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from menagerie import cli  # noqa: E402


def main(argv=None) -> int:
    return cli.main(["plan", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
