"""`make run`: one build at a time per project directory, a clean restart after kill -9, a safe Snakemake argv.

- A lock of our own (flock on `.snakemake/menagerie-run.lock`) is held by the Snakemake process for the whole run; the
  kernel drops it when that process dies, however it dies. A second `make run` meanwhile is refused with one sentence.
  (Snakemake's own `.snakemake/locks` is no such guard: Snakemake 9 removes the whole folder when any run in the
  directory ends, so a run started after that is not refused.)
- Snakemake's locks left by a killed run would stop the next one (`LockException ... --unlock`). They are removed only
  when no workflow process of this directory is alive, checked in /proc: a Snakemake process, or a job it started
  (`scripts/<stage>.py`), whose working directory is the project.
- The argv never lets Snakemake read a target as a config file: `--configfile=<file>` and `--config=recipe=<name>`
  take exactly one value each, so targets and further options after them stay what they are.
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
from pathlib import Path

from menagerie.errors import ConfigError, MenagerieError

LOCK_FILE = Path(".snakemake") / "menagerie-run.lock"
SNAKEMAKE_LOCKS = Path(".snakemake") / "locks"
JOB_SCRIPT = re.compile(r"(^|[\s/'\"])scripts/\w+\.py\b")


class AlreadyRunning(MenagerieError):
    """Another build holds the project directory."""


def acquire(root: str | Path) -> int:
    """Take the project's run lock; returns its file descriptor (inheritable, so the process this one becomes or
    starts holds it too). Raises AlreadyRunning naming the holder when another run has it."""
    path = Path(root) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise AlreadyRunning(
            f"another build is running in {Path(root).resolve()} (pid {holder}); wait for it to "
            f"finish or stop it, then run again"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    os.set_inheritable(fd, True)
    return fd


def _ancestors(pid: int) -> set[int]:
    chain = set()
    while pid > 1 and pid not in chain:
        chain.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return chain


def is_workflow_command(argv: list[str]) -> bool:
    """A Snakemake process (`snakemake ...`, `python -m snakemake ...`) or a job shell/process running one of the
    workflow's stage scripts."""
    if any(Path(a).name == "snakemake" for a in argv[:3]) or "-m snakemake" in " ".join(argv[:4]):
        return True
    return any(JOB_SCRIPT.search(a) for a in argv)


def live_workflow_processes(root: str | Path, proc: str | Path = "/proc") -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose working directory is `root` and which is a Snakemake process or
    one of its jobs; this process and its ancestors (make, the shell) excluded. Processes whose working directory
    cannot be read (other users') are not of this project's runs."""
    root = os.path.realpath(root)
    mine = _ancestors(os.getpid())
    found = []
    for entry in Path(proc).iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            if os.path.realpath(os.readlink(entry / "cwd")) != root:
                continue
            argv = [a for a in (entry / "cmdline").read_bytes().decode(errors="replace").split("\0") if a]
        except OSError:  # gone meanwhile, a zombie, or not ours to read
            continue
        if argv and is_workflow_command(argv):
            found.append((int(entry.name), " ".join(argv)[:120]))
    return sorted(found)


def clear_stale_locks(root: str | Path, log=None) -> bool:
    """Remove Snakemake's locks left by a killed run; True when there were some. Refuses (one sentence) while a
    workflow process of this directory is alive, since then they are not stale."""
    locks = Path(root) / SNAKEMAKE_LOCKS
    files = sorted(p for p in locks.iterdir() if p.is_file()) if locks.is_dir() else []
    if not files:
        return False
    alive = live_workflow_processes(root)
    if alive:
        pids = ", ".join(f"{pid} ({cmd})" for pid, cmd in alive[:3])
        raise AlreadyRunning(
            f"Snakemake's lock in {Path(root).resolve()} belongs to a workflow process that is still "
            f"running (pid {pids}); wait for it to finish or stop it, then run again"
        )
    for path in files:
        path.unlink(missing_ok=True)
    (log or (lambda line: print(line, file=sys.stderr, flush=True)))(
        f"note: removed Snakemake's stale lock ({len(files)} file(s) in {SNAKEMAKE_LOCKS}) left by a run that was "
        f"killed; no workflow process of this directory is alive"
    )
    return True


def snakemake_argv(
    snakemake: str, recipe: str, cores: str, configfile: str | None = None, extra: list[str] | None = None
) -> list[str]:
    """The Snakemake command line of `make run`. The one-value `--opt=value` forms keep any target in `extra` a
    target (with `--configfile a.yaml t` Snakemake reads `t` as a second config file)."""
    argv = [snakemake, f"--cores={cores}"]
    if configfile:
        path = Path(configfile)
        if not path.is_file():
            raise ConfigError(f"CONFIG={configfile}: no such file (expected a YAML config merged over config.yaml)")
        argv.append(f"--configfile={configfile}")
    argv.append(f"--config=recipe={recipe}")
    return argv + list(extra or [])
