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


def needs_cache(explicit_prefix: bool, dont_write: bool, environment_writable: bool) -> bool:
    """Whether this interpreter would compile every module again in every process: it writes no bytecode
    (PYTHONDONTWRITEBYTECODE) or cannot write it beside the installed sources. An explicit PYTHONPYCACHEPREFIX is the
    user's choice and is kept; an interpreter that writes `__pycache__` in the environment is left alone."""
    return not explicit_prefix and (dont_write or not environment_writable)


def cache_bytecode(cache_dir: Path = CACHE_DIR) -> Path | None:
    """Write and read bytecode under `cache_dir` for the modules this process imports from now on, where
    `needs_cache`. Returns the folder used (None: left as it was)."""
    explicit = bool(os.environ.get("PYTHONPYCACHEPREFIX") or sys.pycache_prefix)
    site = Path(sysconfig.get_paths()["purelib"])
    if not needs_cache(explicit, sys.dont_write_bytecode, os.access(site, os.W_OK)):
        return None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    sys.pycache_prefix = str(cache_dir)
    sys.dont_write_bytecode = False
    return cache_dir
