"""DPO starts where the paper started ([T2] §4: DPO on the Tulu 2 SFT model): tulu2-dpo-<size> takes tulu2-<size>'s
SFT output as its model (one SFT job in the DAG, shared), or a released checkpoint when the user says so; eval.json
compares the DPO model with the pretrained base and with the model DPO started from (Δsft). Path logic and report
offline; one Snakemake dry run (real Snakemake, throwaway copy of the workflow)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from menagerie.config import ConfigError, load_config, load_yaml, validate_config
from menagerie.report import build_eval_entry
from menagerie.workflow import RecipePaths

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config(ROOT / "config.yaml")


def test_dpo_recipes_start_from_the_sft_recipes_output(config):
    paths = RecipePaths(config)
    for size in ("7b", "13b", "70b"):
        dpo = f"tulu2-dpo-{size}"
        assert config["recipes"][dpo]["model"] == f"recipe:tulu2-{size}"
        assert paths.training_stages(dpo) == ["dpo"]  # no SFT of its own
        assert paths.stage_input(dpo, "dpo") == f"results/tulu2-{size}/sft"
        assert paths.eval_base_model(dpo) == f"resources/models/llama-2-{size}"
        assert paths.start_model(dpo) == f"results/tulu2-{size}/sft"
        # the SFT model is scored once, by tulu2-<size>'s own evaluation (same suites and settings)
        assert paths.start_metrics(dpo) == paths.evaluations(f"tulu2-{size}")["final"]
        assert paths.start_metrics(dpo).startswith(f"results/evals/tulu2-{size}.sft/")
    # the 70B SFT stage keeps [T2]'s 1e-5 in tulu2-70b, which tulu2-dpo-70b now reads
    assert config["recipes"]["tulu2-70b"]["stages"]["sft"]["learning_rate"] == pytest.approx(1e-5)
    # SFT-only and merge-only recipes have no separate starting model
    assert paths.start_model("tulu2-7b") is None and paths.start_model("tiny-platypus2-merged") is None
    # the tiny twin chains SFT -> DPO in one recipe: its start is its own (full) SFT model, evaluated by itself
    assert paths.start_model("tiny-tulu2-dpo") == "results/tiny-tulu2-dpo/sft"
    assert paths.start_metrics("tiny-tulu2-dpo").startswith("results/evals/tiny-tulu2-dpo.sft/")


def test_user_can_start_dpo_from_the_released_checkpoint(config):
    raw = load_yaml(ROOT / "config.yaml")
    raw["recipes"]["tulu2-dpo-7b"]["model"] = "tulu-2-7b"  # models: allenai/tulu-2-7b
    user = validate_config(raw)
    paths = RecipePaths(user)
    assert paths.stage_input("tulu2-dpo-7b", "dpo") == "resources/models/tulu-2-7b"
    assert paths.start_model("tulu2-dpo-7b") == "resources/models/tulu-2-7b"
    assert paths.eval_base_model("tulu2-dpo-7b") == "resources/models/llama-2-7b"  # eval.base_model
    assert paths.start_metrics("tulu2-dpo-7b").startswith("results/evals/tulu-2-7b@")  # the released model's
    assert user["models"]["tulu-2-7b"]["repo"] == "allenai/tulu-2-7b"
    raw["recipes"]["tulu2-dpo-7b"]["eval"]["base_model"] = "llama-3-8b"
    with pytest.raises(
        ConfigError, match="recipe 'tulu2-dpo-7b'.*key 'eval.base_model' names unknown model 'llama-3-8b'"
    ):
        validate_config(raw)


def _metrics(values: dict) -> dict:
    return {
        "backend": "vllm",
        "dtype": "bfloat16",
        "batch_size": 8,
        "chat_format": "tulu",
        "seed": 1,
        "chat_template_sha256": "0" * 64,
        "tasks": {k: {"status": "ok", "metric": "acc", "value": v, "stderr": 1.0, "n": 100} for k, v in values.items()},
    }


def test_eval_json_compares_with_the_base_and_the_starting_model(config, tmp_path):
    final = _metrics({"mmlu_0shot": 50.7, "alpaca_eval": 85.1})
    base = _metrics({"mmlu_0shot": 41.0, "alpaca_eval": 10.0})
    start = _metrics({"mmlu_0shot": 50.4, "alpaca_eval": 73.9})
    dpo = tmp_path / "dpo.json"
    dpo.write_text(
        '{"metrics": {"final_reward_accuracy": 0.75, "final_reward_margin": 0.4, '
        '"eval_reward_accuracy": 0.7, "eval_reward_margin": 0.3}}'
    )
    entry = build_eval_entry(
        config,
        "tulu2-dpo-7b",
        final,
        base,
        {"dpo": dpo},
        "results/tulu2-dpo-7b/dpo",
        start=start,
        start_model="results/tulu2-7b/sft",
    )
    assert entry["model"] == {
        "base": "llama-2-7b",
        "start": "results/tulu2-7b/sft",
        "final": "results/tulu2-dpo-7b/dpo",
    }
    alpaca = entry["tasks"]["alpaca_eval"]
    assert alpaca["delta_vs_base"] == pytest.approx(75.1) and alpaca["delta_vs_start"] == pytest.approx(11.2)
    assert alpaca["z_vs_start"] == pytest.approx(11.2 / 2**0.5)
    assert entry["start"]["average"] == pytest.approx((50.4 + 73.9) / 2)
    assert entry["dpo"] == {
        "train": {"reward_accuracy": 0.75, "reward_margin": 0.4},
        "validation": {"reward_accuracy": 0.7, "reward_margin": 0.3},
    }
    # without a starting model the keys say so
    plain = build_eval_entry(config, "tulu2-7b", start, base, {}, "results/tulu2-7b/sft")
    assert plain["start"] is None and "start" not in plain["model"] and plain["dpo"] is None
    assert "delta_vs_start" not in plain["tasks"]["mmlu_0shot"]


@pytest.mark.slow
def test_dry_run_of_tulu2_dpo_7b_shares_one_sft_job_with_tulu2_7b(tmp_path):
    from test_dryrun import parse_jobs, snakemake
    from workflow_copy import copy_workflow

    workdir = copy_workflow(tmp_path / "wf")
    result = snakemake(workdir, "-n", "--cores", "1", "results/tulu2-dpo-7b/eval.json", "results/tulu2-7b/eval.json")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = parse_jobs(result.stdout + "\n" + result.stderr)
    trains = [(j["wildcards"]["recipe"], j["wildcards"]["stage"]) for j in jobs if j["rule"] == "train"]
    assert sorted(trains) == [("tulu2-7b", "sft"), ("tulu2-dpo-7b", "dpo")]
    dpo = next(j for j in jobs if j["rule"] == "train" and j["wildcards"]["stage"] == "dpo")
    assert "results/tulu2-7b/sft" in dpo["input"].split(", ")
    evaluated = sorted(j["input"] for j in jobs if j["rule"] == "evaluate")
    # Llama-2-7B and the SFT model are evaluated once each (the SFT model by tulu2-7b, as its final model), and
    # read by both reports
    assert evaluated == ["resources/models/llama-2-7b", "results/tulu2-7b/sft", "results/tulu2-dpo-7b/dpo"]
    sft_eval = next(j["output"] for j in jobs if j["rule"] == "evaluate" and j["input"] == "results/tulu2-7b/sft")
    for recipe in ("tulu2-7b", "tulu2-dpo-7b"):
        report = next(j for j in jobs if j["rule"] == "report" and j["wildcards"]["recipe"] == recipe)
        assert sft_eval in report["input"].split(", ")
    # the DPO recipe alone still builds the SFT model it needs
    alone = parse_jobs(snakemake(workdir, "-n", "--cores", "1", "results/tulu2-dpo-7b/eval.json").stdout)
    assert sorted((j["wildcards"]["recipe"], j["wildcards"]["stage"]) for j in alone if j["rule"] == "train") == [
        ("tulu2-7b", "sft"),
        ("tulu2-dpo-7b", "dpo"),
    ]


@pytest.mark.slow
def test_tiny_dpo_raises_reward_accuracy_and_margin_on_the_validation_pairs(tmp_path, make_tiny_tokenizer):
    """The tiny twin's DPO stage (its config, a few more steps) on a tiny random Llama: at the start the policy is
    its reference (full DPO: a frozen copy of the starting weights), so every implicit reward is 0 (accuracy 0,
    margin 0); after DPO the validation pairs' chosen answers out-score the rejected ones: accuracy above chance and
    a positive margin. Both reach the stage record (eval.json's `dpo`), the model card and the loss plot's data."""
    import copy
    import json

    from tiny_models import build_tiny_llama

    from menagerie.report import dpo_rewards
    from menagerie.train.dpo import run_dpo

    config = load_config(ROOT / "config.yaml")
    recipe = copy.deepcopy(config["recipes"]["tiny-tulu2-dpo"])
    recipe["stages"]["dpo"].update(
        max_steps=16,
        eval_steps=8,
        learning_rate=2e-3,
        max_seq_length=64,
        global_batch_size=8,
        micro_batch_size=8,
        warmup_ratio=0.0,
        warmup_steps=0,
        keep_best=False,
    )
    model = build_tiny_llama(tmp_path / "model", make_tiny_tokenizer(add_bos=True))

    def pairs(n, offset):
        rows = []
        for i in range(offset, offset + n):
            a, b = i % 9, (5 * i) % 7
            rows.append(
                {
                    "id": f"p{i}",
                    "source": "t",
                    "messages": [{"role": "user", "content": f"Compute {a} + {b}."}],
                    "chosen": f"{a} + {b} = {a + b}.",
                    "rejected": f"the model is a token loss {a}",
                }
            )
        return rows

    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in pairs(64, 0)))
    val.write_text("".join(json.dumps(r) + "\n" for r in pairs(16, 500)))
    record = run_dpo("tiny-tulu2-dpo", recipe, model, train, val, tmp_path / "dpo", tmp_path / "work")
    metrics = record["metrics"]
    assert metrics["eval_reward_accuracy"] > 0.5 and metrics["eval_reward_margin"] > 0
    assert metrics["train_reward_margin"] > 0
    rewards = dpo_rewards({"dpo": record})
    assert rewards["validation"] == {
        "reward_accuracy": metrics["eval_reward_accuracy"],
        "reward_margin": metrics["eval_reward_margin"],
    }
    card = (tmp_path / "dpo" / "README.md").read_text()
    assert (
        "| DPO reward accuracy (validation pairs) |" in card
        and "| DPO reward margin, chosen - rejected (validation pairs) |" in card
    )
    log = json.loads((tmp_path / "dpo" / "trainer_log.json").read_text())
    assert [e["step"] for e in log if "eval_rewards/margins" in e] == [8, 16]
    assert (tmp_path / "dpo" / "loss_curve.png").stat().st_size > 0
