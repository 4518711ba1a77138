"""Recompute a built recipe's hashes against its provenance: `python scripts/verify.py results/<recipe>`, the same
as `menagerie verify` (menagerie/cli.py). Exit 0 when every recorded hash matches, 1 on any mismatch or missing file."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from menagerie import cli  # noqa: E402


def main(argv=None) -> int:
    return cli.main(["verify", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
