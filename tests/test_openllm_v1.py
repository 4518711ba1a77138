"""menagerie.evaluate.openllm_v1: the Open LLM Leaderboard v1 results.json and lm-eval's results_<time>.json, from
synthetic native lm-eval results shaped like lm-eval 0.4.13's simple_evaluate output. Fast and offline."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from menagerie.workflow import RecipePaths

from menagerie.config import load_config
from menagerie.errors import MenagerieError
from menagerie.evaluate.openllm_v1 import (
    MMLU_SUBJECTS,
    sanitize_model_name,
    validate_v1,
    write_native_results,
    write_v1_results,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL = "results/platypus2-13b/sft_merged"
PARAMS = 13_015_864_320
STARTED, BLOCK_S = "2024-01-06T09:00:00+0000", 2744.5


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config(ROOT / "config.yaml")


def native_task(results: dict, shots: int, limit: int | None = None, **extra) -> dict:
    """One simple_evaluate output as harness.run_lm_eval_task keeps it."""
    return {
        "results": results,
        "configs": {k: {"task": k, "num_fewshot": shots} for k in results},
        "versions": {k: 1.0 for k in results},
        "n-shot": {k: shots for k in results},
        "higher_is_better": {k: {"acc": True} for k in results},
        "n-samples": {k: {"original": 100, "effective": limit or 100} for k in results},
        "config": {
            "model": MODEL,
            "model_args": None,
            "model_num_parameters": PARAMS,
            "model_dtype": "torch.bfloat16",
            "model_revision": "main",
            "model_sha": "",
            "batch_size": 8,
            "limit": limit,
            "random_seed": 1234,
            "numpy_seed": 1234,
            "torch_seed": 1234,
            "fewshot_seed": 1234,
        },
        "git_hash": "abc1234",
        "date": 1704531600.0,
        "lm_eval_version": "0.4.13",
        **extra,
    }


def mc(acc: float, stderr: float, acc_norm: float | None = None, alias: str = "") -> dict:
    out = {"alias": alias, "acc,none": acc, "acc_stderr,none": stderr}
    if acc_norm is not None:
        out.update({"acc_norm,none": acc_norm, "acc_norm_stderr,none": stderr * 1.1})
    return out


SUBJECT_ACC = {s: round(0.30 + 0.005 * i, 4) for i, s in enumerate(MMLU_SUBJECTS)}


def native_runs(
    arc_shots: int = 25, limit: int | None = None, skip: tuple[str, ...] = (), extra: dict | None = None
) -> dict:
    mmlu = {f"mmlu_{s}": mc(a, 0.04, alias=f"  - {s}") for s, a in SUBJECT_ACC.items()}
    mmlu.update(
        {
            "mmlu": mc(0.44, 0.004, alias="mmlu"),
            "mmlu_humanities": mc(0.40, 0.007),
            "mmlu_other": mc(0.45, 0.008),
            "mmlu_social_sciences": mc(0.47, 0.008),
            "mmlu_stem": mc(0.41, 0.008),
        }
    )
    runs = {
        "arc_challenge_25shot": native_task({"arc_challenge": mc(0.53, 0.0146, 0.5614)}, arc_shots, limit),
        "hellaswag_10shot": native_task({"hellaswag": mc(0.61, 0.0049, 0.8251)}, 10, limit),
        "mmlu_5shot": native_task(
            mmlu,
            5,
            limit,
            groups={"mmlu": mmlu["mmlu"]},
            group_subtasks={"mmlu": ["mmlu_humanities", "mmlu_other", "mmlu_social_sciences", "mmlu_stem"]},
        ),
        "truthfulqa_mc2_0shot": native_task(
            {"truthfulqa_mc2": {"alias": "truthfulqa_mc2", "acc,none": 0.4486, "acc_stderr,none": "N/A"}}, 0, limit
        ),
    }
    runs.update(extra or {})
    return {name: ({} if name in skip else run) for name, run in runs.items()}


def write_eval(tmp: Path, **kwargs) -> Path:
    """The final model's shared evaluation (results/evals/<model key>/<suite hash>/): {metrics.json,
    metrics.provenance.json, work/lm_eval_results.json}."""
    skip = kwargs.get("skip", ())
    final = tmp / "results/evals/platypus2-13b.sft_merged/0123456789abcdef"
    (final / "work").mkdir(parents=True)
    native = native_runs(**kwargs)
    (final / "work/lm_eval_results.json").write_text(json.dumps(native))
    tasks = {
        name: (
            {"status": "skipped", "reason": f"lm-eval task '{name}' could not run here"}
            if name in skip
            else {
                "status": "ok",
                "harness": "lm-eval",
                "metric": "acc",
                "value": 50.0,
                "stderr": 1.0,
                "n": 100,
                "lm_eval_version": "0.4.13",
            }
        )
        for name in native
    }
    metrics = {
        "recipe": "platypus2-13b",
        "key": "platypus2-13b.sft_merged/0123456789abcdef",
        "model": MODEL,
        "backend": "hf",
        "dtype": "bfloat16",
        "batch_size": 8,
        "seed": 1234,
        "chat_format": "alpaca",
        "chat_template_sha256": "0" * 64,
        "tasks": tasks,
        "lm_eval_results": str(final / "work/lm_eval_results.json"),
    }
    (final / "metrics.json").write_text(json.dumps(metrics))
    (final / "metrics.provenance.json").write_text(
        json.dumps({"stage": "evaluate", "started": STARTED, "block_time_s": BLOCK_S})
    )
    return final / "metrics.json"


def v1_file(config, tmp_path, **kwargs) -> tuple[Path, dict]:
    out = tmp_path / "results/platypus2-13b/openllm_v1/results.json"
    write_v1_results(config, "platypus2-13b", write_eval(tmp_path, **kwargs), out)
    return out, json.loads(out.read_text())


def read_like_the_leaderboard(path: Path) -> tuple[str, str, str, dict]:
    """The Open LLM Leaderboard v1 reader (HuggingFaceH4/open_llm_leaderboard src/leaderboard/read_evals.py,
    EvalResult.init_from_json_file): org/model from config_general.model_name, precision from model_dtype, and per
    benchmark the mean of one metric over every results entry whose key contains the benchmark's name."""
    data = json.loads(path.read_text())
    config = data.get("config_general")
    precision = {
        "torch.float16": "float16",
        "float16": "float16",
        "torch.bfloat16": "bfloat16",
        "bfloat16": "bfloat16",
        "torch.float32": "float32",
    }.get(config.get("model_dtype"), "Unknown")
    org, model = config.get("model_name").split("/", 1)
    results = {}
    for benchmark, metric in (
        ("arc:challenge", "acc_norm"),
        ("hellaswag", "acc_norm"),
        ("hendrycksTest", "acc"),
        ("truthfulqa:mc", "mc2"),
        ("winogrande", "acc"),
        ("gsm8k", "acc"),
    ):
        if benchmark == "hendrycksTest" and any(
            data["versions"].get(k) == 0
            for k in ("harness|hendrycksTest-abstract_algebra|5", "hendrycksTest-abstract_algebra")
        ):
            continue
        if benchmark == "truthfulqa:mc" and "harness|truthfulqa:mc|0" in data["results"]:
            if math.isnan(float(data["results"]["harness|truthfulqa:mc|0"][metric])):
                results[benchmark] = 0.0
                continue
        accs = [v.get(metric, None) for k, v in data["results"].items() if benchmark in k]
        if not accs or any(a is None for a in accs):
            continue
        results[benchmark] = sum(accs) / len(accs) * 100.0
    return org, model, precision, results


# ------------------------------------------------------------------------------------------- the v1 file


def test_v1_keys_and_values(config, tmp_path):
    path, data = v1_file(config, tmp_path)
    validate_v1(data, str(path))
    assert list(data) == ["config_general", "results", "versions"]
    results = data["results"]
    keys = [k for k in results if k != "all"]
    assert list(results)[0] == "all"
    for key in keys:
        parts = key.split("|")
        assert len(parts) == 3 and parts[0] == "harness" and parts[2].isdigit(), key
    mmlu = [k for k in keys if k.startswith("harness|hendrycksTest-")]
    assert sorted(mmlu) == sorted(f"harness|hendrycksTest-{s}|5" for s in MMLU_SUBJECTS)
    assert len(mmlu) == 57
    assert set(keys) - set(mmlu) == {"harness|arc:challenge|25", "harness|hellaswag|10", "harness|truthfulqa:mc|0"}
    assert not [k for k in keys if "mmlu" in k]  # lm-eval's group and category rows are not subjects
    assert keys[:2] == ["harness|arc:challenge|25", "harness|hellaswag|10"] and keys[-1] == "harness|truthfulqa:mc|0"

    assert results["harness|arc:challenge|25"] == pytest.approx(
        {"acc": 0.53, "acc_stderr": 0.0146, "acc_norm": 0.5614, "acc_norm_stderr": 0.0146 * 1.1}
    )
    algebra = results["harness|hendrycksTest-abstract_algebra|5"]
    assert algebra == {"acc": 0.30, "acc_stderr": 0.04, "acc_norm": 0.30, "acc_norm_stderr": 0.04}
    assert results["harness|truthfulqa:mc|0"] == {"mc2": 0.4486, "mc2_stderr": None}  # lm-eval's "N/A"

    accs = [0.53, 0.61, *SUBJECT_ACC.values()]
    assert results["all"]["acc"] == pytest.approx(sum(accs) / len(accs))
    assert results["all"]["acc_norm"] == pytest.approx((0.5614 + 0.8251 + sum(SUBJECT_ACC.values())) / 59)
    assert results["all"]["mc2"] == pytest.approx(0.4486) and "mc2_stderr" not in results["all"]
    assert data["versions"]["all"] == 0
    assert data["versions"]["harness|hendrycksTest-abstract_algebra|5"] == 1.0
    assert set(data["versions"]) == set(results)


def test_the_leaderboard_reader_parses_it(config, tmp_path):
    path, _ = v1_file(config, tmp_path)
    org, model, precision, scores = read_like_the_leaderboard(path)
    assert (org, model, precision) == ("menagerie", "platypus2-13b", "bfloat16")
    assert scores == pytest.approx(
        {
            "arc:challenge": 56.14,
            "hellaswag": 82.51,
            "hendrycksTest": 100 * sum(SUBJECT_ACC.values()) / 57,
            "truthfulqa:mc": 44.86,
        }
    )


def test_config_general(config, tmp_path):
    _, data = v1_file(config, tmp_path)
    general = data["config_general"]
    start = datetime.strptime(STARTED, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    assert general["start_time"] == start and general["end_time"] == start + BLOCK_S
    assert general["total_evaluation_time_secondes"] == str(BLOCK_S)
    assert general["model_name"] == "menagerie/platypus2-13b" and general["model_path"] == MODEL
    assert general["model_dtype"] == "torch.bfloat16"
    assert general["model_size"] == f"{PARAMS * 2 / 2**30:.2f} GB" == "24.24 GB"
    assert general["model_sha"] == "" and general["lighteval_sha"] == ""
    assert general["override_batch_size"] == 8 and general["max_samples"] is None
    assert general["lm_eval_version"] == "0.4.13" and general["lm_eval_git_hash"] == "abc1234"
    assert general["protocol_deviations"] == [] and general["tasks_skipped"] == {}


def test_deviations_and_skipped_tasks_are_recorded(config, tmp_path):
    path, data = v1_file(config, tmp_path, arc_shots=0, limit=100, skip=("truthfulqa_mc2_0shot",))
    validate_v1(data, str(path))
    results = data["results"]
    assert "harness|arc:challenge|0" in results and "harness|arc:challenge|25" not in results  # the real count
    assert not [k for k in results if "truthfulqa" in k] and "mc2" not in results["all"]
    general = data["config_general"]
    assert general["max_samples"] == 100
    assert general["protocol_deviations"] == [
        "arc_challenge: 0-shot (v1: 25-shot)",
        "limit 100 examples per task (v1: all)",
    ]
    assert general["tasks_skipped"] == {
        "truthfulqa_mc2_0shot": "lm-eval task 'truthfulqa_mc2_0shot' could not run here"
    }
    assert "truthfulqa:mc" not in read_like_the_leaderboard(path)[3]


def test_winogrande_gsm8k_and_mc1(config, tmp_path):
    """The rest of the v1 protocol, for suites that run it: gsm8k's acc is lm-eval's strict-match exact match."""
    gsm8k = {
        "alias": "gsm8k",
        "exact_match,strict-match": 0.2926,
        "exact_match_stderr,strict-match": 0.0125,
        "exact_match,flexible-extract": 0.3101,
        "exact_match_stderr,flexible-extract": 0.0127,
    }
    truthfulqa = native_runs()["truthfulqa_mc2_0shot"]
    truthfulqa["results"]["truthfulqa_mc1"] = mc(0.2889, 0.0159)
    truthfulqa["n-shot"]["truthfulqa_mc1"] = 0
    extra = {
        "winogrande_5shot": native_task({"winogrande": mc(0.749, 0.0122)}, 5),
        "gsm8k_5shot": native_task({"gsm8k": gsm8k}, 5),
        "truthfulqa_mc2_0shot": truthfulqa,
    }
    path, data = v1_file(config, tmp_path, extra=extra)
    validate_v1(data, str(path))
    results = data["results"]
    assert list(results)[-3:] == ["harness|truthfulqa:mc|0", "harness|winogrande|5", "harness|gsm8k|5"]
    assert results["harness|winogrande|5"] == {"acc": 0.749, "acc_stderr": 0.0122}
    assert results["harness|gsm8k|5"] == {"acc": 0.2926, "acc_stderr": 0.0125}
    assert results["harness|truthfulqa:mc|0"] == {
        "mc1": 0.2889,
        "mc1_stderr": 0.0159,
        "mc2": 0.4486,
        "mc2_stderr": None,
    }
    assert results["all"]["mc1"] == pytest.approx(0.2889)
    scores = read_like_the_leaderboard(path)[3]
    assert scores["winogrande"] == pytest.approx(74.9) and scores["gsm8k"] == pytest.approx(29.26)
    assert scores["truthfulqa:mc"] == pytest.approx(44.86)


def test_partial_mmlu_is_a_deviation(config, tmp_path):
    metrics_path = write_eval(tmp_path)
    native_path = Path(json.loads(metrics_path.read_text())["lm_eval_results"])
    native = json.loads(native_path.read_text())
    del native["mmlu_5shot"]["results"]["mmlu_virology"]
    native_path.write_text(json.dumps(native))
    data = write_v1_results(config, "platypus2-13b", metrics_path, tmp_path / "v1.json")
    assert "harness|hendrycksTest-virology|5" not in data["results"]
    assert "MMLU: 56 of 57 subjects" in data["config_general"]["protocol_deviations"]


def test_recipe_without_the_suite_is_refused(config, tmp_path):
    with pytest.raises(MenagerieError, match=r"recipe 'tiny-tulu2-dpo': key 'eval.suites' has no 'openllm-v1'"):
        write_v1_results(config, "tiny-tulu2-dpo", write_eval(tmp_path), tmp_path / "v1.json")
    assert not (tmp_path / "v1.json").exists()


def test_bad_inputs_name_the_file_and_key(config, tmp_path):
    metrics_path = write_eval(tmp_path)
    metrics = json.loads(metrics_path.read_text())
    native_path = Path(metrics["lm_eval_results"])
    out = tmp_path / "v1.json"

    broken = dict(metrics)
    del broken["lm_eval_results"]
    metrics_path.write_text(json.dumps(broken))
    with pytest.raises(MenagerieError, match=rf"{metrics_path}: key 'lm_eval_results' is missing"):
        write_v1_results(config, "platypus2-13b", metrics_path, out)

    metrics_path.write_text(json.dumps(metrics))
    native = json.loads(native_path.read_text())
    native["hellaswag_10shot"]["results"] = ["not", "an", "object"]
    native_path.write_text(json.dumps(native))
    with pytest.raises(MenagerieError, match=rf"{native_path}: key 'hellaswag_10shot.results'"):
        write_v1_results(config, "platypus2-13b", metrics_path, out)

    native_path.unlink()
    with pytest.raises(MenagerieError, match=rf"{native_path}: lm-eval's native results not found"):
        write_v1_results(config, "platypus2-13b", metrics_path, out)
    assert not out.exists()


def test_eval_times_from_the_stage_record(tmp_path):
    from menagerie.evaluate.openllm_v1 import eval_times

    metrics_path = tmp_path / "metrics.json"
    record = metrics_path.with_suffix(".provenance.json")
    assert eval_times(metrics_path) is None
    start = datetime.strptime(STARTED, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    record.write_text(json.dumps({"started": STARTED, "block_time_s": 10.5, "wall_time_s": 20.0}))
    assert eval_times(metrics_path) == (start, start + 10.5, 10.5)
    record.write_text(json.dumps({"started": STARTED, "wall_time_s": 20.0}))  # older records: the process's life
    assert eval_times(metrics_path) == (start, start + 20.0, 20.0)
    record.write_text(json.dumps({"started": "yesterday", "wall_time_s": 20.0}))
    with pytest.raises(MenagerieError, match=rf"{record}: key 'started', 'block_time_s' or 'wall_time_s'"):
        eval_times(metrics_path)


def test_schema_names_the_offending_key(config, tmp_path):
    _, data = v1_file(config, tmp_path)
    bad = json.loads(json.dumps(data))
    bad["results"]["harness|arc:challenge"] = {"acc": 0.5}  # two parts, no few-shot count
    with pytest.raises(MenagerieError, match=r"x\.json: key 'results'.*'harness\|arc:challenge' does not match"):
        validate_v1(bad, "x.json")
    bad = json.loads(json.dumps(data))
    bad["config_general"]["model_name"] = "no-org"
    with pytest.raises(MenagerieError, match=r"key 'config_general\.model_name'"):
        validate_v1(bad, "x.json")
    bad = json.loads(json.dumps(data))
    bad["results"]["harness|hellaswag|10"]["acc_norm"] = None  # only stderrs may be null
    with pytest.raises(MenagerieError, match=r"key 'results\.harness\|hellaswag\|10\.acc_norm'"):
        validate_v1(bad, "x.json")


# ------------------------------------------------------------------------------------------- lm-eval's file


def test_native_results_file_follows_lm_eval(config, tmp_path):
    import lm_eval.utils
    from lm_eval.result_schema import EvalResults

    metrics_path = write_eval(tmp_path)
    out_dir = metrics_path.parent / "lm_eval"
    path = write_native_results(config, "platypus2-13b", metrics_path, out_dir)

    end = datetime.fromtimestamp(datetime.strptime(STARTED, "%Y-%m-%dT%H:%M:%S%z").timestamp() + BLOCK_S)
    assert sanitize_model_name(MODEL) == lm_eval.utils.sanitize_model_name(MODEL)
    assert sanitize_model_name(MODEL) == "results__platypus2-13b__sft_merged"
    assert path == out_dir / "results__platypus2-13b__sft_merged" / f"results_{end.isoformat().replace(':', '-')}.json"
    assert [p for p in out_dir.rglob("*") if p.is_file()] == [path]
    assert lm_eval.utils.get_results_filenames([str(path)]) == [str(path)]

    data = json.loads(path.read_text())
    assert set(data) - set(EvalResults.__annotations__) == {"menagerie"}
    assert {"arc_challenge", "hellaswag", "truthfulqa_mc2", "mmlu", "mmlu_abstract_algebra"} <= set(data["results"])
    assert data["n-shot"]["arc_challenge"] == 25 and data["n-shot"]["mmlu_anatomy"] == 5
    assert data["groups"] == {"mmlu": data["results"]["mmlu"]}
    assert data["group_subtasks"]["mmlu"][0] == "mmlu_humanities"
    assert data["config"]["model"] == MODEL and data["lm_eval_version"] == "0.4.13"
    assert data["model_source"] == "hf" and data["model_name"] == MODEL
    assert data["total_evaluation_time_seconds"] == str(BLOCK_S)
    # the openllm-v1 tasks run without the chat template (config.yaml: chat_format: false)
    assert data["chat_template"] is None and data["fewshot_as_multiturn"] is False
    assert set(data["menagerie"]["task_configs"]) == set(native_runs())
    assert data["menagerie"]["key"] == "platypus2-13b.sft_merged/0123456789abcdef"  # the shared evaluation's

    # rewritten whole: one results file, no temporaries
    write_native_results(config, "platypus2-13b", metrics_path, out_dir)
    assert [p for p in out_dir.rglob("*") if p.is_file()] == [path]
    assert not [p for p in out_dir.parent.iterdir() if ".tmp" in p.name]


def test_cli(config, tmp_path):
    spec = importlib.util.spec_from_file_location("menagerie_evaluate_cli", ROOT / "scripts/evaluate.py")
    evaluate_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate_cli)
    resolved = tmp_path / "resolved.json"
    resolved.write_text(json.dumps(config))
    metrics_path = write_eval(tmp_path)
    out = tmp_path / "results/platypus2-13b/openllm_v1/results.json"
    evaluate_cli.main(
        [
            "openllm-v1",
            "--config",
            str(resolved),
            "--recipe",
            "platypus2-13b",
            "--metrics",
            str(metrics_path),
            "--out",
            str(out),
        ]
    )
    validate_v1(json.loads(out.read_text()), str(out))
    key = "/".join(RecipePaths(config).evaluations("platypus2-13b")["final"].split("/")[2:4])
    evaluate_cli.main(
        [
            "lm-eval-native",
            "--config",
            str(resolved),
            "--key",
            key,  # the shared evaluation's key
            "--metrics",
            str(metrics_path),
            "--out",
            str(tmp_path / "lm_eval"),
        ]
    )
    assert len(list((tmp_path / "lm_eval").glob("*/results_*.json"))) == 1

    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/evaluate.py"),
            "openllm-v1",
            "--config",
            str(resolved),
            "--recipe",
            "tiny-tulu2-dpo",
            "--metrics",
            str(metrics_path),
            "--out",
            str(tmp_path / "tiny.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "error: recipe 'tiny-tulu2-dpo': key 'eval.suites' has no 'openllm-v1': the Open LLM Leaderboard v1 results "
        "file is written only for recipes scored on that suite"
    ]
