"""Compiled bytecode for the stage processes, kept in the project's `.cache/pycache`.

A stage process imports thousands of modules (torch, transformers, vLLM, lm-eval). When the interpreter writes no
bytecode (PYTHONDONTWRITEBYTECODE is set, as on shared machines that keep the environment clean, or the environment
is read-only, as in an Apptainer image) every process compiles all of them from source again: on 2 cores that is
about half of the evaluate job's start-up (README, "Performance"). Redirecting the bytecode into the project's
ignored cache folder keeps the environment untouched and compiles each module once per checkout.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "pycache"


def cache_bytecode(cache_dir: Path = CACHE_DIR) -> Path | None:
    """Write and read bytecode under `cache_dir` for the modules this process imports from now on, when the
    interpreter would otherwise compile them on every start. Returns the folder used (None: left as it was).

    An explicit PYTHONPYCACHEPREFIX is the user's choice and is kept; an interpreter that writes its bytecode next
    to the sources (the usual case: `__pycache__` in the virtual environment) is left alone."""
    if os.environ.get("PYTHONPYCACHEPREFIX") or sys.pycache_prefix:
        return None
    site = Path(sysconfig.get_paths()["purelib"])
    if not sys.dont_write_bytecode and os.access(site, os.W_OK):
        return None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    sys.pycache_prefix = str(cache_dir)
    sys.dont_write_bytecode = False
    return cache_dir
