"""Shared entry-point wrapper for the stage scripts: user errors become one line, never a traceback."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from pathlib import Path
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from menagerie.bytecode import cache_bytecode
from menagerie.errors import ConfigError, MenagerieError


def _terminate(signum, frame) -> NoReturn:
    sys.exit(128 + signum)


def run_cli(fn: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> NoReturn:
    """Call `fn(argv)` and exit.

    Exits 0 when `fn` returns None (or its integer return value otherwise). A `MenagerieError` is
    printed to stderr as a single line `error: <message>` and the process exits 1. Any other
    exception is a bug and propagates with its traceback.
    """
    # every stage script starts here: compile its heavy imports (torch, transformers, trl, ...) once per checkout
    # where the machine writes no bytecode (menagerie.bytecode), before `fn` imports them
    cache_bytecode()
    # SIGTERM (Snakemake stopping a job, SLURM's scancel) unwinds like an exception, so temporary outputs
    # (menagerie.io.atomic_directory / atomic_open) are removed instead of left behind
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, _terminate)
    try:
        result = fn(argv)
    except MenagerieError as exc:
        print(error_line(exc), file=sys.stderr)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


def error_line(exc: MenagerieError) -> str:
    """A user error as the one line the command line prints: `error: <message>`."""
    return "error: " + " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def load_resolved_config(path: str | Path) -> dict:
    """The fully resolved config the workflow dumps once per run (resources/config/<hash>.json)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"resolved config {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"resolved config {path} line {exc.lineno}: not valid JSON ({exc.msg})") from None


def name_paths(values: Sequence[str], flag: str) -> dict[str, Path]:
    """`NAME=PATH` arguments of `flag` as {name: path}; anything else is a one-sentence ConfigError."""
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"{flag} expects NAME=PATH, got {value!r}")
        out[name] = Path(path)
    return out


def name_path_words(paths: Mapping[str, Any]) -> str:
    """{name: path} as the `NAME=PATH ...` words name_paths parses (rules pass them to the stage scripts)."""
    return " ".join(f"{name}={path}" for name, path in paths.items())


def recipe_from(config: dict, name: str) -> dict:
    if name not in config.get("recipes", {}):
        raise ConfigError(f"recipe '{name}' is not defined in the config")
    return config["recipes"][name]
