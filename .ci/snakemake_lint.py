"""`snakemake --lint` with the lints this workflow keeps on purpose: fails on any other (run by `make lint`).

Each kept lint has its reason here and in README "Lint". Run from the project root with the project's python.
"""

from __future__ import annotations

import re
import subprocess
import sys

# (where: regex on "snakefile <path>" / "rule <name>", title: regex on the lint's first line, reason)
KEPT = [
    (
        r"^rule ",
        r"^Shell command directly uses variable RESOLVED_CONFIG from outside of the rule",
        "the resolved config's path changes with every config edit, so as a param it would rerun every rule on any "
        "edit; rules carry the hash of what they read instead (menagerie.jobs.write_resolved_config)",
    ),
]

HEADER = re.compile(r"^Lints for (snakefile (?P<file>\S+)|rule (?P<rule>\S+) \(line \d+, (?P<rfile>\S+)\)):$")
ITEM = re.compile(r"^    \* (?P<title>.*?):?$")


def lints(text: str) -> list[tuple[str, str]]:
    found, where = [], None
    for line in text.splitlines():
        if m := HEADER.match(line):
            where = f"snakefile {m['file']}" if m["file"] else f"rule {m['rule']}"
        elif where and (m := ITEM.match(line)):
            found.append((where, m["title"]))
    return found


def main() -> int:
    run = subprocess.run([sys.executable, "-m", "snakemake", "--lint", *sys.argv[1:]], capture_output=True, text=True)
    text = run.stdout + run.stderr
    found = lints(text)
    if run.returncode not in (0, 1) or (run.returncode == 1 and not found):
        sys.stderr.write(text)
        print("snakemake --lint did not run", file=sys.stderr)
        return 1
    unexpected = [(w, t) for w, t in found if not any(re.search(pw, w) and re.search(pt, t) for pw, pt, _ in KEPT)]
    for where, title in unexpected:
        print(f"lint: {where}: {title}", file=sys.stderr)
    print(
        f"snakemake --lint: {len(found)} lints, {len(found) - len(unexpected)} kept on purpose "
        f"(.ci/snakemake_lint.py, README 'Lint'), {len(unexpected)} new"
    )
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
