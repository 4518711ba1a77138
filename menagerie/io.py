"""Small file helpers shared by the stage scripts: atomic writers and content hashes.

Every output is written to a temporary file in the destination directory and moved into place with
`os.replace`, so a reader (or Snakemake after an interrupted job) never sees a partial file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_CHUNK = 1 << 20


def jsonl_line(row: dict) -> str:
    """The canonical serialisation of one row: sorted keys, UTF-8 kept as is, newline terminated."""
    return json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"


def jsonl_sha256(rows: Iterable[dict]) -> str:
    """sha256 of the bytes `write_jsonl(rows, ...)` would write, without writing them."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(jsonl_line(row).encode("utf-8"))
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file next to `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_jsonl(rows: Iterable[dict], path: str | Path) -> str:
    """Atomically write `rows` as JSON lines (see `jsonl_line`); returns the sha256 of the bytes written."""
    digest = hashlib.sha256()
    with atomic_open(path, "wb") as handle:
        for row in rows:
            data = jsonl_line(row).encode("utf-8")
            digest.update(data)
            handle.write(data)
    return digest.hexdigest()


def write_json(obj: Any, path: str | Path) -> None:
    """Atomically write `obj` as indented JSON with sorted keys and a trailing newline."""
    with atomic_open(path, "w") as handle:
        handle.write(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_directory(path: str | Path):
    """Yield a fresh temporary directory next to `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists() or path.is_symlink():
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    os.replace(tmp, path)
