"""Recompute a built recipe's hashes against its provenance: `python scripts/verify.py results/<recipe>`.
Exit 0 when every recorded hash matches, 1 on any mismatch or missing file."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from menagerie.verify import verify_recipe  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("recipe_dir", help="results/<recipe>")
    args = parser.parse_args(argv)
    checks = verify_recipe(args.recipe_dir)
    bad = [c for c in checks if c.status != "ok"]
    for c in checks:
        if c.status != "ok":
            print(f"{c.status.upper()}: {c.record} {c.key}: {c.detail}", file=sys.stderr)
    print(f"verify {args.recipe_dir}: {len(checks) - len(bad)}/{len(checks)} hashes match")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
