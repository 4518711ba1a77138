"""How a training stage's processes are started: one plain Python process, torchrun with one per GPU, or (for
`resources.nodes > 1`) one torchrun agent per node of a SLURM allocation.

The Snakemake rule runs `command(resources) + ["scripts/train.py", ...]` as one job; torchrun sets WORLD_SIZE and
the stage derives per-device batch and accumulation from it (common.derive_batch), so the global batch stays the
recipe's whatever nodes x GPUs run it. MENAGERIE_NPROC overrides the process count per node (e.g. 2 CPU processes
with the gloo backend in tests).

Multi-node: the job script runs on the allocation's first node; `srun --nodes N --ntasks N --ntasks-per-node 1`
starts one torchrun agent on every node, and the agents meet at a c10d rendezvous on the first node (no `--standalone`, which
would make each node its own world): world size = nodes x GPUs per node. The rule itself runs inside the SLURM
plugin's one-task job step on the first node (menagerie/resources.py), so the agents' step shares the allocation's
resources with it (`--overlap`) instead of waiting for that step to end. The first node's host name and the job id
are read at run time from SLURM's environment, so those two arguments are shell expansions, not quoted words.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping

NPROC_ENV = "MENAGERIE_NPROC"
RDZV_PORT = 29500
# the allocation's first node, and the job id: expanded by the job's shell inside the SLURM allocation
FIRST_NODE = '"$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"'
JOB_ID = '"$SLURM_JOB_ID"'


class Shell(str):
    """An argument placed verbatim in the shell line (a `$(...)` / `$VAR` expansion), never quoted."""


def process_count(resources: Mapping | None, env: Mapping[str, str] | None = None) -> int:
    """Processes per node: MENAGERIE_NPROC if set, else the stage's `resources.gpus` (at least 1)."""
    env = os.environ if env is None else env
    override = env.get(NPROC_ENV, "").strip()
    if override:
        if not override.isdigit() or int(override) < 1:
            from menagerie.errors import ConfigError

            raise ConfigError(f"{NPROC_ENV}={override!r}: expected a positive process count")
        return int(override)
    return max(int((resources or {}).get("gpus") or 0), 1)


def node_count(resources: Mapping | None) -> int:
    return max(int((resources or {}).get("nodes") or 1), 1)


def interpreter(python: str | None) -> list[str]:
    """The interpreter as argv words: `python` is a shell-words string (e.g. `env PYTHONPATH=. python` inside an
    Apptainer image, or a quoted path), so it is split, never quoted whole; the default is this interpreter."""
    return shlex.split(python) if python else [sys.executable]


def torchrun(nodes: int, nproc: int, rdzv_endpoint: str | None = None, rdzv_id: str | None = None) -> list[str]:
    """torchrun's arguments: standalone on one node, a c10d rendezvous at `rdzv_endpoint` across several."""
    if nodes == 1:
        return ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [
        "-m",
        "torch.distributed.run",
        f"--nnodes={nodes}",
        f"--nproc_per_node={nproc}",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint",
        rdzv_endpoint,
        "--rdzv_id",
        rdzv_id,
    ]


def command(resources: Mapping | None, python: str | None = None, env: Mapping[str, str] | None = None) -> list[str]:
    """The argv prefix that starts a stage script: `python` alone, torchrun for more than one process on one node,
    srun + one torchrun agent per node for `resources.nodes > 1` (inside a SLURM allocation)."""
    python_argv = interpreter(python)
    nproc = process_count(resources, env)
    nodes = node_count(resources)
    if nodes == 1:
        return python_argv if nproc == 1 else [*python_argv, *torchrun(1, nproc)]
    # --ntasks explicitly: the rule runs inside the plugin's `srun -n1` step, whose SLURM_NTASKS=1 a nested srun
    # reads as its -n (which outranks --ntasks-per-node), so it would start ONE agent and the rendezvous never fills
    return [
        "srun",
        "--overlap",
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        "--ntasks-per-node=1",
        *python_argv,
        *torchrun(nodes, nproc, Shell(f"{FIRST_NODE}:{RDZV_PORT}"), Shell(JOB_ID)),
    ]


def shell_prefix(resources: Mapping | None, python: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """command() as a shell line: every word quoted except the run-time expansions."""
    return " ".join(part if isinstance(part, Shell) else shlex.quote(part) for part in command(resources, python, env))
