"""How a training stage's processes are started: one plain Python process, or torchrun with one per GPU.

The Snakemake rule runs `command(resources) + ["scripts/train.py", ...]` as one job; torchrun sets WORLD_SIZE and
the stage derives per-device batch and accumulation from it (common.derive_batch), so the global batch stays the
recipe's. MENAGERIE_NPROC overrides the process count (e.g. 2 CPU processes with the gloo backend in tests).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping

NPROC_ENV = "MENAGERIE_NPROC"


def process_count(resources: Mapping | None, env: Mapping[str, str] | None = None) -> int:
    """Processes to start: MENAGERIE_NPROC if set, else the stage's `resources.gpus` (at least 1)."""
    env = os.environ if env is None else env
    override = env.get(NPROC_ENV, "").strip()
    if override:
        if not override.isdigit() or int(override) < 1:
            from menagerie.errors import ConfigError

            raise ConfigError(f"{NPROC_ENV}={override!r}: expected a positive process count")
        return int(override)
    return max(int((resources or {}).get("gpus") or 0), 1)


def command(resources: Mapping | None, python: str | None = None, env: Mapping[str, str] | None = None) -> list[str]:
    """The argv prefix that starts a stage script: `python` alone, or torchrun for more than one process."""
    python = python or sys.executable
    nproc = process_count(resources, env)
    if nproc == 1:
        return [python]
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


def shell_prefix(resources: Mapping | None, python: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """command() quoted for a shell line."""
    return " ".join(shlex.quote(part) for part in command(resources, python, env))
