"""The `menagerie` command (menagerie/cli.py): each subcommand on real inputs, errors as one line and exit 1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from menagerie import cli
from menagerie.config import load_config
from menagerie.report import build_eval_entry

ROOT = Path(__file__).resolve().parents[1]


def test_console_script_is_registered_to_main():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["menagerie"].partition(":")
    assert module == "menagerie.cli" and getattr(cli, function) is cli.main


def test_plan_prints_the_table_and_an_unknown_recipe_is_one_line(capsys):
    assert cli.main(["plan", "--config", str(ROOT / "config.yaml"), "--", "tulu2-7b"]) == 0
    out = capsys.readouterr().out
    assert "| tulu2-7b | sft |" in out and "Sizes in GiB per device" in out
    assert cli.main(["plan", "--config", str(ROOT / "config.yaml"), "--", "no-such-recipe"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: recipe 'no-such-recipe' is not defined") and "\n" not in err


def test_verify_takes_a_recipe_name_under_results(tmp_path, monkeypatch, capsys):
    from test_verify import build_tree

    recipe = build_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["verify", "r"]) == 0
    assert "verify results/r: 7/7 hashes match" in capsys.readouterr().out
    (recipe / "sft/adapter_model.safetensors").write_bytes(b"tampered")
    assert cli.main(["verify", "r"]) == 1
    assert "verify results/r: 6/7 hashes match" in capsys.readouterr().out
    assert cli.main(["verify", "missing"]) == 1
    assert capsys.readouterr().err.startswith("error: missing is neither a built recipe's directory")


def test_leaderboard_rebuilds_the_page_from_every_built_eval_json(tmp_path, capsys):
    config = load_config(ROOT / "config.yaml")
    results = tmp_path / "results"
    for name, value in (("tiny-tulu2-dpo", 60.0), ("tiny-platypus2", 75.0)):
        metrics = {
            "recipe": name,
            "which": "final",
            "model": "m",
            "backend": "hf",
            "dtype": "float32",
            "batch_size": 16,
            "seed": 1234,
            "chat_format": "tulu",
            "chat_template_sha256": "0" * 64,
            "tasks": {
                "heldout_exact": {
                    "status": "ok",
                    "harness": "lm-eval",
                    "metric": "exact_match",
                    "value": value,
                    "stderr": 3.0,
                    "n": 200,
                }
            },
        }
        path = results / name / "eval.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(build_eval_entry(config, name, metrics, None, {}, f"results/{name}/m")))
    assert cli.main(["leaderboard", "--results", str(results)]) == 0
    rows = json.loads((results / "leaderboard.json").read_text())["rows"]
    assert sorted(r["recipe"] for r in rows) == ["tiny-platypus2", "tiny-tulu2-dpo"]
    assert (results / "leaderboard.html").is_file() and (results / "leaderboard.md").is_file()
    assert "2 rows from 2 eval.json" in capsys.readouterr().out
    assert cli.main(["leaderboard", "--results", str(tmp_path / "empty")]) == 1


def test_run_outside_the_project_says_where_to_run_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "tiny-platypus2"]) == 1
    assert capsys.readouterr().err.startswith(f"error: no Snakefile in {tmp_path}")


def test_python_m_menagerie_dryrun_runs_snakemake_on_the_twin():
    """`python -m menagerie dryrun` (real Snakemake, -n): the twin's eval.json is among the jobs it would run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "menagerie",
            "dryrun",
            "tiny-platypus2",
            "--",
            "--quiet",
            "rules",
            "--directory",
            str(ROOT),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "report" in run.stdout + run.stderr


@pytest.mark.parametrize("script", ["plan.py", "verify.py"])
def test_stage_scripts_are_the_same_command(script):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and f"menagerie {script[:-3]}" in run.stdout


def test_name_paths_parses_and_refuses_in_one_sentence():
    from menagerie.cli_support import name_paths
    from menagerie.errors import ConfigError

    assert name_paths(["sft=a/b.jsonl", "eval:x=c=d.jsonl"], "--raw") == {
        "sft": Path("a/b.jsonl"),
        "eval:x": Path("c=d.jsonl"),
    }
    for bad in ("sft", "=a.jsonl", "sft="):
        with pytest.raises(ConfigError, match=f"--raw expects NAME=PATH, got '{re.escape(bad)}'"):
            name_paths([bad], "--raw")
