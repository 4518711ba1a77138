"""Small file helpers shared by the stage scripts: atomic writers, content hashes and the one JSON-lines reader.

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

from menagerie.errors import MenagerieError

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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_tmp_dirs(path: str | Path) -> list[Path]:
    """Remove `.<name>.tmp-<pid>` siblings of `path` whose process is dead on this host (left by a kill -9);
    returns what was removed. A directory of a live process (another run writing now) is kept."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    prefix = f".{path.name}.tmp-"
    for sibling in path.parent.iterdir():
        pid = sibling.name[len(prefix) :] if sibling.name.startswith(prefix) else ""
        if pid.isdigit() and sibling.is_dir() and not sibling.is_symlink() and not _pid_alive(int(pid)):
            shutil.rmtree(sibling, ignore_errors=True)
            removed.append(sibling)
    return removed


@contextmanager
def atomic_directory(path: str | Path):
    """Yield a fresh temporary directory next to `path`; on success it replaces `path`, on error it is removed.

    The temporary directory is `.<name>.tmp-<pid>`; ones left by dead processes (kill -9, where no cleanup runs)
    are removed when the next attempt starts.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp_dirs(path)
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


# ---------------------------------------------------------------------------------------------- reading


def _not_utf8(path: Path, line: int, exc: UnicodeDecodeError, chunk: bytes) -> MenagerieError:
    column = exc.start + 1
    return MenagerieError(
        f"{path} line {line}: not UTF-8 text (byte 0x{chunk[exc.start]:02x} at column {column}: "
        f"{exc.reason}); expected UTF-8, e.g. re-encode with `iconv -f latin1 -t utf-8`"
    )


def decode_utf8(data: bytes, path: str | Path) -> str:
    """`data` as UTF-8 text; a decoding error names the file's 1-based line (and column), not a byte offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        end = data.find(b"\n", exc.start)
        chunk = data[start:] if end < 0 else data[start:end]
        local = UnicodeDecodeError(exc.encoding, chunk, exc.start - start, exc.end - start, exc.reason)
        raise _not_utf8(Path(path), line, local, chunk) from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) for each non-blank line of a JSON-lines file.

    Problems are one sentence naming the file and the line: a line that is not JSON (with the parser's full
    message), a value that is not an object, a line that is not UTF-8 (with the column, not a byte offset).
    """
    path = Path(path)
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _not_utf8(path, number, exc, raw) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MenagerieError(
                    f"{path} line {number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                    f"expected one JSON object per line"
                ) from None
            if not isinstance(row, dict):
                raise MenagerieError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")
            yield number, row


def read_jsonl(path: str | Path) -> list[dict]:
    """The objects of a JSON-lines file, blank lines skipped (errors as in `iter_jsonl`)."""
    return [row for _, row in iter_jsonl(path)]
