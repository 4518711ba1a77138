"""Reproduction bundles and the organiser's check (menagerie.bundle, menagerie.check, menagerie.verdict) on a results
tree built in tmp_path by the project's own writers: stage provenance by provenance.stage_record, eval.json by
report.build_eval_entry, model hashes by provenance.file_hashes. Only the model weights are placeholder bytes (a real
run takes ~15 min of 2 cores; the tiny twin end to end is README's `make run && make bundle && make check`)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from menagerie.bundle import build_bundle, read_bundle, slurm_job_ids
from menagerie.check import check_bundle, gpu_matches
from menagerie.config import load_config
from menagerie.provenance import file_hashes, stage_record
from menagerie.report import build_eval_entry, evaluation_links, validate_eval
from menagerie.train.budget import append_ledger
from menagerie.workflow import RecipePaths

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "tiny-tulu2-dpo"


@pytest.fixture
def config() -> dict:
    """config.yaml with published scores and a tolerance for the tiny suite (the tiny twins have none)."""
    config = copy.deepcopy(load_config(ROOT / "config.yaml"))
    for task, key in zip(config["suites"]["tiny"], ("heldout", "humaneval")):
        task["published_key"] = key
    config["recipes"][RECIPE]["published"] = {
        "source": "a planted paper",
        "metrics": {"heldout": 58.0, "humaneval": 30.0, "average": 40.0},
    }
    config["tolerances"]["tiny"] = {"points": 1.0, "justification": "test"}
    config.setdefault("averages", {})["tiny-avg"] = {
        "suite": "tiny",
        "published_key": "average",
        "source": "planted",
        "tasks": [{"task": "heldout_exact"}, {"task": "humaneval_pass1"}],
    }
    return config


def metrics(tasks: dict, which: str = "final") -> dict:
    return {
        "recipe": RECIPE,
        "which": which,
        "model": "m",
        "backend": "hf",
        "dtype": "float32",
        "batch_size": 16,
        "backend_settings": None,
        "library_versions": {"lm-eval": "0.4.13"},
        "seed": 1234,
        "chat_format": "tulu",
        "chat_template_sha256": "0" * 64,
        "tasks": tasks,
    }


def ok(value, stderr, n):
    return {"status": "ok", "harness": "lm-eval", "metric": "exact_match", "value": value, "stderr": stderr, "n": n}


def write_stage(path: Path, stage: str, wall_s: float, **fields) -> None:
    with stage_record(stage, path, recipe=RECIPE, **fields):
        pass
    record = json.loads((path / "provenance.json" if path.suffix != ".json" else path).read_text())
    record["wall_time_s"] = wall_s  # stage_record times the (pytest) process; a fixed figure keeps sums exact
    write_stage.clock += 1  # and the stages start in the order they are written, a minute apart
    record["started"] = f"2026-01-01T10:{write_stage.clock:02d}:00+0000"
    (path / "provenance.json" if path.suffix != ".json" else path).write_text(json.dumps(record))


write_stage.clock = 0


def build_run(root: Path, config: dict, tasks: dict | None = None) -> Path:
    """results/tiny-tulu2-dpo as a build leaves it (small placeholder weights)."""
    paths = RecipePaths(config)
    rdir = root / "results" / RECIPE
    base = root / paths.base_model(RECIPE)
    base.mkdir(parents=True)
    (base / "model.safetensors").write_bytes(b"base weights")
    (base / "config.json").write_text('{"model_type": "llama"}')
    (rdir / "data").mkdir(parents=True)
    for part in ("sft", "dpo"):
        (rdir / f"data/{part}.jsonl").write_text('{"a": 1}\n')
        (rdir / f"data/{part}_report.json").write_text(json.dumps({"sha256": {"train": "b" * 64}, "rows": 1}))
    (rdir / "data/contamination.json").write_text(
        json.dumps(
            {
                "recipe": RECIPE,
                "summary": {"action": "drop", "flagged_rows": 2, "eval_items": 80, "parts": {}},
                "pairs": [],
            }
        )
    )
    model_in = base
    for stage in ("sft", "dpo"):  # as the recipe trains them: full (the model) or an adapter, then its merge
        out = rdir / stage
        out.mkdir()
        weights = "adapter_model.safetensors" if paths.is_adapter(RECIPE, stage) else "model.safetensors"
        (out / weights).write_bytes(f"{stage} weights".encode())
        (out / "trainer_log.json").write_text('[{"loss": 1.0, "step": 1}]')
        write_stage(
            out,
            stage,
            600.0,
            model=str(model_in.relative_to(root)),
            input_sha256=file_hashes({"model": model_in, "train": rdir / f"data/{stage}.jsonl"}),
            metrics={"global_step": 40},
            stopped_for_budget=False,
        )
        model_in = out
        if paths.is_adapter(RECIPE, stage):
            merged = rdir / f"{stage}_merged"
            merged.mkdir()
            (merged / "model.safetensors").write_bytes(f"{stage} merged".encode())
            write_stage(merged, "merge", 60.0, input_sha256=file_hashes({"adapter": out / weights}))
            model_in = merged
    final = metrics(tasks or {"heldout_exact": ok(60.0, 3.5, 64), "humaneval_pass1": ok(12.5, 8.3, 16)})
    evaluated = root / paths.evaluations(RECIPE)["final"]  # the shared evaluation: results/evals/<key>/<hash>/
    (evaluated.parent / "lm_eval").mkdir(parents=True)
    evaluated.write_text(json.dumps(final))
    (evaluated.parent / "lm_eval/results_2026.json").write_text('{"results": {}}')
    write_stage(
        evaluated.with_suffix(".provenance.json"), "evaluate", 300.0, key="final", model=paths.final_model(RECIPE)
    )
    logs = root / "logs" / RECIPE
    logs.mkdir(parents=True)
    for name in ("sft", "dpo"):
        (logs / f"{name}.log").write_text(f"{name} ran\n")
    eval_logs = root / "logs" / evaluated.parent.relative_to(root / "results")
    eval_logs.mkdir(parents=True)
    (eval_logs / "evaluate.log").write_text("evaluate ran\n")
    shutil.copy(ROOT / "uv.lock", root / "uv.lock")
    write_eval_json(root, config, final)
    return rdir


def write_eval_json(root: Path, config: dict, final: dict) -> None:
    """eval.json from `final` (the shared final evaluation's metrics.json, linked with its sha256)."""
    paths = RecipePaths(config)
    stage_files = {k: root / v for k, v in paths.stage_records(RECIPE).items()}
    links = evaluation_links({"final": paths.evaluations(RECIPE)["final"]}, root)
    entry = build_eval_entry(config, RECIPE, final, None, stage_files, paths.final_model(RECIPE), evaluations=links)
    (root / "results" / RECIPE / "eval.json").write_text(json.dumps(entry, indent=2))


@pytest.fixture
def run(tmp_path, config) -> Path:
    return build_run(tmp_path / "project", config)


def unpack(bundle: Path, into: Path) -> Path:
    with tarfile.open(bundle) as tar:
        tar.extractall(into, filter="data")
    (top,) = list(into.iterdir())
    return top


def edit_json(path: Path, change) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def failures(findings) -> list[str]:
    return [f.message for f in findings if f.level == "fail"]


# ------------------------------------------------------------------------------------------------ verdicts


def test_verdict_per_task_and_average_in_eval_json(run):
    entry = json.loads((run / "eval.json").read_text())
    validate_eval(entry)
    held, human = entry["tasks"]["heldout_exact"]["verdict"], entry["tasks"]["humaneval_pass1"]["verdict"]
    assert held["reproduced"] is True and held["bound"] == pytest.approx(7.0)  # |2.0| <= 2 x 3.5
    assert human["reproduced"] is False and human["bound"] == pytest.approx(16.6)  # |17.5| > 2 x 8.3
    average = entry["verdict"]["average"]  # (60 + 12.5) / 2 vs 40
    assert average["delta"] == pytest.approx(-3.75) and average["reproduced"] is True
    assert average["combined_stderr"] == pytest.approx((3.5**2 + 8.3**2) ** 0.5 / 2)
    assert entry["verdict"]["status"] == "not_reproduced" and entry["verdict"]["failed"] == ["humaneval_pass1"]


def test_tolerance_widens_the_bound(config, tmp_path):
    config["tolerances"]["tiny"]["points"] = 20.0
    entry = json.loads((build_run(tmp_path, config) / "eval.json").read_text())
    assert entry["tasks"]["humaneval_pass1"]["verdict"]["bound"] == 20.0
    assert entry["verdict"]["status"] == "reproduced"


def test_leaderboard_marks_verdicts(run, tmp_path):
    from menagerie.leaderboard import write_leaderboard

    rows = write_leaderboard([run / "eval.json"], tmp_path / "lb.json", tmp_path / "lb.md", tmp_path / "lb.html")
    md, html = (tmp_path / "lb.md").read_text(), (tmp_path / "lb.html").read_text()
    assert "60.0 ± 3.5 [paper 58.00 ✓]" in md and "[paper 30.00 ✗]" in md and "| 40.00 ✓ |" in md
    assert rows[0]["verdict"] == "not_reproduced"
    assert 'class="sub verdict ok"' in html and 'class="sub verdict fail"' in html


# ------------------------------------------------------------------------------------------------ bundle


def test_bundle_holds_the_run(run, config):
    root = run.parent.parent
    bundle = build_bundle(root, config, RECIPE)
    commit = json.loads((run / "eval.json").read_text())["provenance"]["git_commit"]
    assert bundle.parent == run / "bundle" and bundle.name.startswith(f"{RECIPE}-{commit[:7]}")
    assert (
        bundle.with_name(bundle.name + ".sha256").read_text().split()[0]
        == __import__("hashlib").sha256(bundle.read_bytes()).hexdigest()
    )
    members = read_bundle(bundle).members
    for name in (
        "eval.json",
        "config/recipe.json",
        "provenance/sft/provenance.json",
        "provenance/dpo/provenance.json",
        "provenance/eval/final/metrics.json",
        "provenance/eval/final/metrics.provenance.json",
        "logs/sft.log",
        "logs/eval/final/evaluate.log",
        "lm_eval/final/results_2026.json",
        "data/contamination.json",
        "data/sft_report.json",
        "environment/uv.lock",
        "environment/containers.json",
        "models/base.json",
        "models/dpo.json",
        "models/sft/trainer_log.json",
        "budget/usage.json",
        "REPRODUCTION.md",
        "MANIFEST.json",
    ):
        assert name in members, name
    assert not any(n.endswith(".safetensors") for n in members)  # no weights by default
    manifest = json.loads(members["MANIFEST.json"])
    assert set(manifest["files"]) == set(members) - {"MANIFEST.json"}
    page = members["REPRODUCTION.md"].decode()
    assert page.startswith(f"# Reproduction of `{RECIPE}`: NOT REPRODUCED")
    assert "| heldout_exact | tiny | 60.00 ± 3.50 | 64 | 58.00 | 2.00 | 7.00 | ✓ |" in page
    assert "| humaneval_pass1 | tiny | 12.50 ± 8.30 | 16 | 30.00 | -17.50 | 16.60 | ✗ |" in page
    assert "| **tiny-avg** (paper's average) | tiny | 36.25 | | 40.00 | -3.75 | 9.01 | ✓ |" in page
    assert "- tiny: 1.0 (test)" in page
    stages = [line.split(" | ")[0][2:] for line in page.splitlines() if "| CPU only" in line]
    assert stages == ["sft", "dpo", "eval final"]  # in the order they ran (full fine-tuning: no merges)
    assert "Contamination gate: 2 training rows flagged" in page
    weights = build_bundle(root, config, RECIPE, out_dir=root / "with", with_weights=True)
    assert "models/sft/model.safetensors" in read_bundle(weights).members


def test_missing_or_stale_eval_json_is_one_sentence(tmp_path, config, run):
    from menagerie.errors import MenagerieError

    with pytest.raises(MenagerieError, match=r"eval.json does not exist; build the recipe first"):
        build_bundle(tmp_path, config, RECIPE)
    config["recipes"][RECIPE]["stages"]["sft"]["learning_rate"] = 0.5
    with pytest.raises(MenagerieError, match=r"was built from another version of recipe 'tiny-tulu2-dpo'"):
        build_bundle(run.parent.parent, config, RECIPE)


def test_a_shared_evaluation_changed_after_eval_json_is_one_sentence(config, run):
    """The final evaluation lives in results/evals/ (shared); eval.json links it by sha256, so a re-evaluation
    that eval.json has not caught up with is refused rather than bundled beside the old scores."""
    from menagerie.errors import MenagerieError

    root = run.parent.parent
    metrics = root / RecipePaths(config).evaluations(RECIPE)["final"]
    edit_json(metrics, lambda m: m["tasks"]["heldout_exact"].update(value=61.0))
    with pytest.raises(MenagerieError, match=rf"^{re.escape(str(metrics))} changed after .*eval.json was written"):
        build_bundle(root, config, RECIPE)


def test_slurm_job_ids_from_provenance():
    records = [
        {"slurm": {"job_id": "123", "array": [{"job_id": 7}]}},
        {"environment": {"SLURM_JOB_ID": "456"}},
        {"job_id": "not slurm"},
    ]
    assert slurm_job_ids(records) == ["123", "7", "456"]


# ------------------------------------------------------------------------------------------------ check


def test_clean_bundle_passes_through_the_cli(run, config, tmp_path):
    root = run.parent.parent
    bundle = build_bundle(root, config, RECIPE)
    assert failures(check_bundle(bundle, config)) == []
    # the CLI with the unmodified config.yaml: the planted published scores make the recipe differ from it
    shutil.copy(ROOT / "config.yaml", root / "config.yaml")
    cli = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bundle.py"), "check", str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert 'recipe.published.metrics.heldout: 58.0 in the bundle, "<absent>" in config.yaml' in cli.stdout


@pytest.fixture
def unpacked(run, config, tmp_path) -> Path:
    return unpack(build_bundle(run.parent.parent, config, RECIPE), tmp_path / "unpacked")


def test_tampered_score_is_named(unpacked, config):
    edit_json(unpacked / "eval.json", lambda e: e["tasks"]["heldout_exact"].update(value=70.0))
    bad = failures(check_bundle(unpacked, config))
    assert any(m.startswith("eval.json was changed after bundling") for m in bad), bad
    assert (
        "the value of task heldout_exact was changed: eval.json says 70.0, the evaluate stage's metrics.json "
        "says 60.0" in bad
    )


def test_tampered_hash_is_named(unpacked, config):
    edit_json(unpacked / "models/sft.json", lambda m: m["files"]["model.safetensors"].update(sha256="0" * 64))
    bad = failures(check_bundle(unpacked, config))
    assert any(m.startswith("models/sft.json was changed after bundling") for m in bad), bad
    assert "models/sft.json: its file hashes do not add up to its directory hash (a hash was edited)" in bad


def test_tampered_manifest_hash_is_named(unpacked, config):
    edit_json(unpacked / "MANIFEST.json", lambda m: m["files"]["logs/sft.log"].update(sha256="0" * 64))
    bad = failures(check_bundle(unpacked, config))
    assert len(bad) == 1 and bad[0].startswith("logs/sft.log was changed after bundling"), bad


def test_tampered_config_value_is_named(unpacked, config):
    lr = config["recipes"][RECIPE]["stages"]["sft"]["learning_rate"]
    edit_json(unpacked / "config/recipe.json", lambda c: c["recipe"]["stages"]["sft"].update(learning_rate=0.002))
    bad = failures(check_bundle(unpacked, config))
    assert any("not to the config_hash" in m and "the config was changed after the run" in m for m in bad), bad
    assert any(
        f"recipe.stages.sft.learning_rate: 0.002 in the bundle, {json.dumps(lr)} in config.yaml" in m for m in bad
    ), bad


def test_planted_budget_overrun_fails(config, tmp_path):
    config["recipes"][RECIPE]["budget"] = {"gpu_hours": None, "wall_hours": 0.5, "gpus": None, "gpu_model": None}
    run = build_run(tmp_path, config)
    now = time.time()
    for event, at in (("start", now - 3600), ("beat", now - 1800)):  # a killed attempt: no end line
        append_ledger(run, {"attempt": "sft-1", "stage": "sft", "gpus": 0, "event": event, "at": at})
    for event, at in (("start", now - 1500), ("end", now - 900)):  # its retry
        append_ledger(run, {"attempt": "sft-2", "stage": "sft", "gpus": 0, "event": event, "at": at})
    bundle = build_bundle(run.parent.parent, config, RECIPE)
    usage = json.loads(read_bundle(bundle).members["budget/usage.json"])
    assert usage["stages"]["sft"] == {
        "attempts": 2,
        "wall_hours": pytest.approx(40 / 60),
        "gpu_hours": 0.0,
        "gpus": 0,
        "source": "ledger",
        "stopped_for_budget": False,
        "counted": True,
    }
    # sft 40 min (2 attempts, ledger) + dpo 10 + eval 5 (provenance) = 55 min (full fine-tuning: no merges)
    assert usage["wall_hours"] == pytest.approx(55 / 60)
    bad = failures(check_bundle(bundle, config))
    assert bad == ["the budget was overrun: 0.917 wall hours used, the budget allows 0.5"], bad
    config["recipes"][RECIPE]["budget"]["wall_hours"] = 1.0  # the organiser's rules are config.yaml's
    assert [m for m in failures(check_bundle(bundle, config)) if "overrun" in m] == []


def test_hardware_equivalence(config, tmp_path):
    config["recipes"][RECIPE]["stages"]["sft"]["resources"]["gpu_model"] = "rtx4090_24gb"
    run = build_run(tmp_path, config)
    for path in run.glob("*/provenance.json"):
        edit_json(path, lambda r: r["environment"]["hardware"].update(gpus=["NVIDIA A100-SXM4-80GB"]))
    bundle = build_bundle(run.parent.parent, config, RECIPE)
    warned = [f.message for f in check_bundle(bundle, config) if f.level == "warn" and f.check == "hardware"]
    assert warned == ["stage sft ran on NVIDIA A100-SXM4-80GB; the recipe declares rtx4090_24gb"]
    # the organiser's rules name the GPU (config.yaml's budget): now a failure
    config["recipes"][RECIPE]["budget"] = {
        "gpu_hours": None,
        "wall_hours": None,
        "gpus": 1,
        "gpu_model": "rtx4090_24gb",
    }
    hardware = [m for m in failures(check_bundle(bundle, config)) if "ran on" in m]
    assert len(hardware) == 3 and all("the budget names rtx4090_24gb" in m for m in hardware)  # sft, dpo, eval
    assert gpu_matches("rtx4090_24gb", "NVIDIA GeForce RTX 4090") and gpu_matches("a100_80gb", "NVIDIA A100-SXM4-80GB")
    assert not gpu_matches("a100_40gb", "NVIDIA A100-SXM4-80GB") and not gpu_matches("a100_80gb", "NVIDIA H100 80GB")


# ------------------------------------------------------------------------------------------------ re-run with MODEL


@pytest.mark.slow
def test_rerun_with_the_model_agrees_and_a_wrong_model_is_named(tmp_path, config, tiny_tokenizer):
    """A real lm-eval run (hf backend) of a tiny random Llama on 6 held-out problems, then `make check MODEL=...`
    re-runs it from the bundle's config: same model -> same scores; another model -> named, and its scores compared."""
    from menagerie.evaluate.run import evaluate_model
    from tiny_models import build_tiny_llama

    config["suites"]["tiny"] = [{**config["suites"]["tiny"][0], "max_new_tokens": 8}]  # heldout_exact only
    config["recipes"][RECIPE]["eval"].update(backend="hf", batch_size=6)
    root = tmp_path / "project"
    run = build_run(root, config, {"heldout_exact": ok(0.0, 0.0, 6)})  # replaced by the real evaluation below
    (root / "resources/datasets").mkdir(parents=True)
    data = root / "resources/datasets/tiny-eval.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(6))
    )
    final = root / RecipePaths(config).final_model(RECIPE)
    shutil.rmtree(final)
    build_tiny_llama(final, tiny_tokenizer)
    metrics = evaluate_model(
        config,
        RECIPE,
        final,
        "final",
        {"tiny-eval": data},
        root / RecipePaths(config).evaluations(RECIPE)["final"],
        tmp_path / "work",
    )
    assert metrics["tasks"]["heldout_exact"]["status"] == "ok" and metrics["tasks"]["heldout_exact"]["n"] == 6
    write_eval_json(root, config, metrics)
    bundle = build_bundle(root, config, RECIPE)
    findings = check_bundle(bundle, config, model_dir=final, root=root, tasks=["heldout_exact"])
    assert failures(findings) == [], [f.line() for f in findings]
    rerun = [f.message for f in findings if f.check == "rerun"]
    assert len(rerun) == 1 and rerun[0].startswith("task heldout_exact: re-run")
    assert "is the bundled final model" in " ".join(f.message for f in findings if f.check == "model")
    other = tmp_path / "other"
    build_tiny_llama(other, tiny_tokenizer)
    (other / "config.json").write_text(
        (other / "config.json").read_text().replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05')
    )
    bad = failures(check_bundle(bundle, config, model_dir=other, root=root, tasks=["heldout_exact"]))
    assert len(bad) == 1 and bad[0].startswith(f"{other} is not the bundled final model"), bad


def test_missing_eval_json_is_named_not_a_traceback(unpacked, config):
    """A bundle cut by hand (a member removed, the manifest left): one finding, and the content checks, which read
    eval.json, do not run (they raised KeyError)."""
    (unpacked / "eval.json").unlink()
    bad = failures(check_bundle(unpacked, config))
    assert "eval.json is listed in MANIFEST.json but missing from the bundle" in bad
    assert "eval.json is missing from the bundle; its content cannot be checked" in bad


def test_unparseable_member_is_named_not_a_traceback(unpacked, config):
    (unpacked / "models/sft.json").write_text('{"files": ')
    bad = failures(check_bundle(unpacked, config))
    assert any(m.startswith("models/sft.json was changed after bundling") for m in bad), bad
    assert any(m.startswith("models/sft.json is not readable JSON (") for m in bad), bad
    # through the CLI: exit 1 with the findings, no traceback
    cli = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bundle.py"), "check", str(unpacked)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert cli.returncode == 1 and "Traceback" not in cli.stderr, cli.stdout + cli.stderr
    assert "models/sft.json is not readable JSON" in cli.stdout


def reseal(unpacked: Path, member: str) -> None:
    """What a submitter who edits a member can also do: record its new hash in MANIFEST.json."""
    import hashlib

    data = (unpacked / member).read_bytes()
    edit_json(
        unpacked / "MANIFEST.json",
        lambda m: m["files"][member].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data)),
    )


def test_verdict_against_a_forged_paper_number_fails(unpacked, config):
    """eval.json compares humaneval_pass1 (12.5) with a published 12.0 instead of the paper's 30.0, verdict and
    manifest made consistent with the forgery: the organiser's config.yaml number decides."""

    def forge(entry):
        task = entry["tasks"]["humaneval_pass1"]
        task["published"], task["delta_vs_published"] = 12.0, 0.5
        task["verdict"].update(reproduced=True, delta=0.5)

    edit_json(unpacked / "eval.json", forge)
    reseal(unpacked, "eval.json")
    bad = failures(check_bundle(unpacked, config))
    assert (
        "task humaneval_pass1 is compared with published 12.0 in eval.json; config.yaml's paper number is 30.0" in bad
    ), bad


def test_verdict_under_a_widened_tolerance_fails_when_the_organisers_flips_it(unpacked, config):
    edit_json(
        unpacked / "eval.json",
        lambda e: e["tasks"]["humaneval_pass1"]["verdict"].update(reproduced=True, tolerance=20.0, bound=20.0),
    )
    reseal(unpacked, "eval.json")
    findings = check_bundle(unpacked, config)
    assert (
        "task humaneval_pass1 was judged with tolerance 20.0, config.yaml declares 1.0 for suite tiny, under "
        "which it is reproduced=False" in failures(findings)
    )
    # a differing tolerance that does not change the outcome stays a warning
    edit_json(unpacked / "eval.json", lambda e: e["tasks"]["heldout_exact"]["verdict"].update(tolerance=3.0))
    reseal(unpacked, "eval.json")
    warned = [f.message for f in check_bundle(unpacked, config) if f.level == "warn"]
    assert "task heldout_exact was judged with tolerance 3.0, config.yaml declares 1.0 for suite tiny" in warned
