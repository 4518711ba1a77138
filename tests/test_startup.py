"""What cuts the evaluate job's start-up: bytecode cached in the project when the interpreter writes none, and
transformers imported without scikit-learn. Real interpreters in subprocesses (the settings are per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from menagerie.bytecode import needs_cache

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, env: dict, cwd: Path) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PYTHONPATH": f"{ROOT}{os.pathsep}{cwd}"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE")}
    return {**env, **extra}


IMPORT_ONE = """
import json, sys
from pathlib import Path
from menagerie.bytecode import cache_bytecode
used = cache_bytecode(Path("cache"))
import probe_module
print(json.dumps({"used": str(used) if used else None, "prefix": sys.pycache_prefix,
                  "dont_write": sys.dont_write_bytecode}))
"""


def test_bytecode_goes_to_the_project_cache_when_the_interpreter_writes_none(tmp_path):
    (tmp_path / "probe_module.py").write_text("VALUE = 1\n")
    out = _python(IMPORT_ONE, _env(PYTHONDONTWRITEBYTECODE="1"), tmp_path)
    cache = tmp_path / "cache"
    assert out == {"used": "cache", "prefix": "cache", "dont_write": False}
    compiled = list(cache.rglob("probe_module.*.pyc"))
    assert len(compiled) == 1 and str(tmp_path).lstrip("/") in str(compiled[0])  # mirrored source path
    assert not (tmp_path / "__pycache__").exists()  # nothing beside the source


def test_an_explicit_prefix_is_kept(tmp_path):
    (tmp_path / "probe_module.py").write_text("VALUE = 1\n")
    mine = tmp_path / "mine"
    out = _python(IMPORT_ONE, _env(PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=str(mine)), tmp_path)
    assert out["used"] is None and out["prefix"] == str(mine) and out["dont_write"] is True
    assert not (tmp_path / "cache").exists()


def test_the_cache_is_used_only_where_every_process_would_compile_again():
    assert needs_cache(explicit_prefix=False, dont_write=True, environment_writable=True)
    assert needs_cache(explicit_prefix=False, dont_write=False, environment_writable=False)  # read-only image
    assert not needs_cache(explicit_prefix=False, dont_write=False, environment_writable=True)
    assert not needs_cache(explicit_prefix=True, dont_write=True, environment_writable=False)


@pytest.mark.slow
def test_transformers_is_imported_without_sklearn_and_sklearn_still_imports_afterwards(tmp_path):
    out = _python(
        """
import json, sys
from menagerie.evaluate import harness
hidden = harness.import_transformers_without_sklearn()
loaded_after_transformers = "sklearn" in sys.modules
from transformers.utils import is_sklearn_available
available = is_sklearn_available()
again = harness.import_transformers_without_sklearn()
from sklearn.metrics import f1_score   # what lm-eval's f1 metric imports
print(json.dumps({"hidden": hidden, "loaded": loaded_after_transformers, "available": available, "again": again,
                  "f1": f1_score([0, 1, 1], [0, 1, 0])}))
""",
        _env(PYTHONDONTWRITEBYTECODE="1"),
        tmp_path,
    )
    assert out["hidden"] is True and out["loaded"] is False and out["available"] is False
    assert out["again"] is False  # once per process
    assert out["f1"] == pytest.approx(2 / 3)  # scikit-learn itself still works for lm-eval's metrics


def test_a_task_defined_in_the_repo_runs_without_indexing_lm_evals_builtin_tasks(monkeypatch):
    from menagerie.evaluate import harness

    full = object()
    monkeypatch.setattr(harness, "task_manager", lambda: full)
    local = harness.manager_for("menagerie_exact")  # the tiny twins' held-out task (tasks/)
    assert local is harness.local_task_manager() and local is not full
    assert "menagerie_exact" in local.task_index and "gsm8k" not in local.task_index
    assert harness.manager_for("gsm8k") is full  # an lm-eval built-in task
    groups = [n for n, e in local.task_index.items() if e.kind.name == "GROUP"]
    assert groups and harness.manager_for(groups[0]) is full  # a repo group names other tasks
