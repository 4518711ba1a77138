"""`make run`'s guard (menagerie/runlock.py): one build per directory, Snakemake's stale locks removed only when no
workflow process of the directory lives (read from /proc), and an argv Snakemake's own parser reads as meant.

The whole story through `make run` (kill -9, rerun resumes, a second run refused) is tests/e2e/test_reruns.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from menagerie import runlock
from menagerie.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_a_second_holder_is_refused_with_one_sentence_until_the_first_process_dies(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from menagerie import runlock; "
            "runlock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runlock.AlreadyRunning) as refused:
            runlock.acquire(tmp_path)
        message = str(refused.value)
        assert f"pid {holder.pid}" in message and "\n" not in message and message.count(";") == 1
        (tmp_path / runlock.SNAKEMAKE_LOCKS).mkdir(parents=True)  # Snakemake's locks vanishing changes nothing
        with pytest.raises(runlock.AlreadyRunning):
            runlock.acquire(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    fd = runlock.acquire(tmp_path)  # the kernel dropped the dead holder's lock
    assert (tmp_path / runlock.LOCK_FILE).read_text().strip() == str(os.getpid())
    os.close(fd)


def stale_locks(root: Path) -> Path:
    locks = root / runlock.SNAKEMAKE_LOCKS
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("results/x\n")
    (locks / "0.output.lock").write_text("results/y\n")
    return locks


def test_stale_snakemake_locks_are_removed_when_no_workflow_process_lives(tmp_path):
    locks, lines = stale_locks(tmp_path), []
    assert runlock.clear_stale_locks(tmp_path, log=lines.append)
    assert not list(locks.iterdir())
    assert len(lines) == 1 and "stale lock" in lines[0]
    assert not runlock.clear_stale_locks(tmp_path, log=lines.append)  # nothing left: nothing said
    assert len(lines) == 1


@pytest.mark.parametrize(
    "argv",
    [["snakemake", "--cores", "1"], ["bash", "-c", "set -euo pipefail; /v/bin/python scripts/train.py sft --x y"]],
)
def test_locks_stay_while_a_workflow_process_of_the_directory_lives(tmp_path, argv):
    """A live process with the directory as working directory and a Snakemake (or job) command line: a process named
    `snakemake` that only sleeps stands in for Snakemake itself."""
    locks = stale_locks(tmp_path)
    fake = tmp_path / "bin" / Path(argv[0]).name
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    fake.chmod(0o755)
    process = subprocess.Popen([str(fake), *argv[1:]], cwd=tmp_path)
    try:
        deadline = time.time() + 10
        while not runlock.live_workflow_processes(tmp_path) and time.time() < deadline:
            time.sleep(0.05)
        assert [pid for pid, _ in runlock.live_workflow_processes(tmp_path)] == [process.pid]
        with pytest.raises(runlock.AlreadyRunning, match=f"still running \\(pid {process.pid} "):
            runlock.clear_stale_locks(tmp_path)
        assert len(list(locks.iterdir())) == 2
        assert runlock.live_workflow_processes(tmp_path / "bin") == []  # another directory's process
    finally:
        process.kill()
        process.wait()
    assert runlock.clear_stale_locks(tmp_path, log=lambda line: None)


def test_workflow_commands():
    assert runlock.is_workflow_command(["/v/bin/python", "/v/bin/snakemake", "--cores", "2"])
    assert runlock.is_workflow_command(["python", "-m", "snakemake", "-n"])
    assert runlock.is_workflow_command(["/v/bin/python", "scripts/evaluate.py", "model"])
    assert not runlock.is_workflow_command(["make", "-o", "env", "run"])
    assert not runlock.is_workflow_command(["bash"])
    assert not runlock.is_workflow_command(["vim", "notes/scripts.txt"])


def test_snakemake_reads_config_and_targets_as_meant(tmp_path):
    """Snakemake's own parser: with `--configfile a.yaml t` it takes t as a config file; our argv keeps it a target."""
    from snakemake.cli import get_argument_parser

    user = tmp_path / "my.yaml"
    user.write_text("recipes: {}\n")
    argv = runlock.snakemake_argv("snakemake", "my-recipe", "2", str(user), ["-n", "results/my-recipe/sft"])
    parsed = get_argument_parser().parse_args(argv[1:])
    assert [str(p) for p in parsed.configfile] == [str(user)]
    assert parsed.config == ["recipe=my-recipe"]
    assert parsed.targets == ["results/my-recipe/sft"] and parsed.dryrun
    trap = get_argument_parser().parse_args(["--configfile", str(user), "results/my-recipe/sft"])
    assert len(trap.configfile) == 2 and not trap.targets  # the trap the argv avoids
    assert runlock.snakemake_argv("snakemake", "r", "all") == ["snakemake", "--cores=all", "--config=recipe=r"]


def test_a_missing_config_file_is_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match=r"^CONFIG=.*nope.yaml: no such file \(expected a YAML config"):
        runlock.snakemake_argv("snakemake", "r", "all", str(tmp_path / "nope.yaml"))
