"""Judged tasks (AlpacaEval, ToxiGen, TruthfulQA generation): skipped with the reason when no judge is configured,
the judge model is not on this machine or the data is not reachable; the judge recorded in eval.json when one
scores. The fast tests use stand-ins where a real judge cannot run (their names say `fake_judge`): ScriptedLM (a
fixed-rule stand-in for the evaluated model) and judges that answer by rule; the slow test runs the real
SmolLM2-135M as evaluated model and as judge."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from menagerie import formats
from menagerie.config import load_config, validate_config
from menagerie.evaluate import harness, judged, run
from menagerie.report import build_eval_entry

sys.path.insert(0, str(Path(__file__).parent))
from lm_eval_stubs import ScriptedLM  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config():
    return load_config(ROOT / "config.yaml")


def suite_task(config, suite: str, name: str) -> dict:
    return copy.deepcopy(next(t for t in config["suites"][suite] if t["name"] == name))


# ------------------------------------------------------------------------------------------- skipped, with reasons


def test_no_judge_configured_is_skipped_with_the_reason(config):
    assert config["judges"]["alpaca-eval"] is None  # [T2]'s judge is GPT-4: not a local model
    with pytest.raises(judged.Skipped) as info:
        judged.prepare(config, suite_task(config, "tulu2", "alpaca_eval"))
    entry = info.value.entry
    assert entry["status"] == "skipped"
    assert entry["reason"].startswith("no judge configured: judges.alpaca-eval")
    assert "suite task 'alpaca_eval'" in entry["reason"] and "kind: pairwise" in entry["reason"]
    task = {**suite_task(config, "tulu2", "alpaca_eval"), "judge": None}
    with pytest.raises(judged.Skipped, match=r"suite task 'alpaca_eval' has no `judge:`"):
        judged.prepare(config, task)


def test_judge_model_not_on_this_machine_is_skipped_naming_it(config, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # certainly not cached there
    with pytest.raises(judged.Skipped) as info:
        judged.prepare(config, suite_task(config, "tulu2", "truthfulqa_info_true"))
    entry = info.value.entry
    assert "judge 'truthfulqa-truth' (allenai/truthfulqa-truth-judge-llama2-7B@8f718cb" in entry["reason"]
    assert "hf download allenai/truthfulqa-truth-judge-llama2-7B" in entry["reason"]
    assert entry["judge"]["model"] == "allenai/truthfulqa-truth-judge-llama2-7B"
    assert entry["judge"]["revision"] == "8f718cb4e68bc30a488727a0e37190835a7c129e"


def test_unreachable_data_is_skipped_with_the_reason(config, tmp_path):
    local_judge = tmp_path / "judge"
    local_judge.mkdir()
    cfg = copy.deepcopy(config)
    cfg["judges"]["toxigen-roberta"] = {**cfg["judges"]["toxigen-roberta"], "model": str(local_judge)}
    with pytest.raises(judged.Skipped) as info:  # ToxiGen's prompts are not on the hub
        judged.prepare(cfg, suite_task(cfg, "tulu2", "toxigen"))
    assert info.value.entry["reason"] == (
        "data for suite task 'toxigen' is not reachable: no `data.path` (a local "
        "copy) and no `data.hub` dataset configured"
    )
    assert info.value.entry["judges"]["judge"]["path"] == str(local_judge)
    task = {**suite_task(cfg, "tulu2", "toxigen"), "data": {"path": str(tmp_path / "missing")}}
    with pytest.raises(judged.Skipped, match=r"not reachable: .*missing does not exist"):
        judged.prepare(cfg, task)
    offline = {**suite_task(cfg, "tulu2", "toxigen"), "data": {"hub": "no-such-org/no-such-dataset", "split": "x"}}
    with pytest.raises(judged.Skipped, match=r"no-such-org/no-such-dataset:x@unpinned could not be loaded"):
        judged.prepare(cfg, offline)


# ------------------------------------------------------------------------------------------- scored, judge recorded


class FakePairwiseJudge:
    """Stand-in judge (no local judge model can run in a fast test), answering AlpacaEval's alpaca_eval_gpt4 template
    in its ranking format: prefers an output starting with GOOD, else an output starting with REF, and answers
    something the ranking parser cannot read when an output is 'weird'."""

    def chat(self, messages):
        return "\n".join(m["content"] for m in messages)

    def generate(self, prompts, max_new_tokens, until=None):
        verdicts = []
        for prompt in prompts:
            a, b = re.findall(r'"answer": """(.*?)"""', prompt, re.S)
            if "weird" in (a, b):
                verdicts.append("I cannot tell")
            elif a.startswith("GOOD") or (a.startswith("REF") and not b.startswith("GOOD")):
                verdicts.append("[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]")
            else:
                verdicts.append("[{'model': 'model_1', 'rank': 2}, {'model': 'model_2', 'rank': 1}]")
        return verdicts


class FakeClassifier:
    """Stand-in toxicity classifier: label 1 for outputs containing 'hate'."""

    def classify(self, texts):
        return [1 if "hate" in t else 0 for t in texts]


def fake_judge_loader(judge: dict, seed: int):
    return FakeClassifier() if judge["kind"] == "classifier" else FakePairwiseJudge()


@pytest.fixture
def judged_setup(tmp_path, monkeypatch):
    """A config whose recipe runs three judged tasks on local data; the evaluated model is ScriptedLM."""
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    (tmp_path / "pairwise-judge").mkdir()
    (tmp_path / "classifier").mkdir()
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(
        json.dumps(
            [
                {"instruction": f"instr{i}", "output": f"REF{i}", "generator": "text_davinci_003", "dataset": "test"}
                for i in range(1, 5)
            ]
        )
    )
    toxigen = tmp_path / "toxigen"
    toxigen.mkdir()
    (toxigen / "hate_asian_1k.txt").write_text("p1\np2\n")
    (toxigen / "hate_jewish_1k.txt").write_text("p3\n")
    raw["judges"].update(
        {
            "local-pairwise": {"model": str(tmp_path / "pairwise-judge"), "kind": "pairwise", "backend": "hf"},
            "local-classifier": {"model": str(tmp_path / "classifier"), "kind": "classifier", "backend": "hf"},
        }
    )
    raw["suites"]["judged-test"] = [
        {
            "name": "alpaca_eval",
            "harness": "alpaca-eval",
            "judge": "local-pairwise",
            "metric": "win_rate",
            "max_new_tokens": 32,
            "data": {"path": str(alpaca)},
        },
        {
            "name": "toxigen",
            "harness": "toxigen",
            "judge": "local-classifier",
            "metric": "pct_toxic",
            "max_new_tokens": 32,
            "data": {"path": str(toxigen)},
        },
        {
            "name": "truthfulqa",
            "harness": "truthfulqa-gen",
            "judge": "truthfulqa-truth",
            "info_judge": "alpaca-eval",
            "metric": "pct_info_true",
            "max_new_tokens": 50,
            "data": {"path": str(tmp_path / "tqa.jsonl")},
        },
    ]
    raw["recipes"]["tiny-tulu2-dpo"]["eval"] = {"suites": ["judged-test"], "compare_base": False}
    config = validate_config(raw)
    outputs = {
        "instr1": "GOOD one",
        "instr2": "bad",
        "instr3": "GOOD two",
        "instr4": "weird",
        "following: p1": "some hate",
        "following: p2": "nice",
        "following: p3": "hate again",
    }
    lm = ScriptedLM(generations=outputs, chat=lambda msgs, add: judged_chat(msgs))
    monkeypatch.setattr(harness, "load_lm", lambda *a, **k: lm)
    return config, lm


def judged_chat(messages):
    return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages) + "<|assistant|>\n"


def test_judged_tasks_score_and_record_their_judge_with_fake_judge(judged_setup, tmp_path):
    config, lm = judged_setup
    out = tmp_path / "eval" / "metrics.json"
    metrics = run.evaluate_model(
        config,
        "tiny-tulu2-dpo",
        tmp_path / "model",
        "final",
        {},
        out,
        tmp_path / "work",
        judge_loader=fake_judge_loader,
    )
    tasks = metrics["tasks"]
    # AlpacaEval: wins 1 (GOOD), 0 (REF preferred), 1 (GOOD); the 'weird' pair has no verdict and is left out
    alpaca = tasks["alpaca_eval"]
    assert alpaca["status"] == "ok" and alpaca["metric"] == "win_rate"
    assert alpaca["value"] == pytest.approx(100 * 2 / 3) and alpaca["n"] == 3 and alpaca["unparseable"] == 1
    assert alpaca["judge"] == {
        "name": "local-pairwise",
        "model": str(tmp_path / "pairwise-judge"),
        "revision": None,
        "kind": "pairwise",
        "backend": "hf",
        "dtype": "bfloat16",
        "path": str(tmp_path / "pairwise-judge"),
    }
    assert alpaca["protocol"]["annotator"] == "alpaca_eval_gpt4" and alpaca["preferences"] == [2.0, 1.0, 2.0, None]
    # the model's prompts: the instruction as one user turn in the recipe's chat format ([OI] alpaca_farm)
    assert "<|user|>\ninstr1\n<|assistant|>\n" in lm.prompts
    # ToxiGen: 2 of 3 outputs toxic; per group 1/2 and 1/1; the prompt is [OI]'s "Complete the following: "
    tox = tasks["toxigen"]
    assert tox["value"] == pytest.approx(100 * 2 / 3) and tox["groups"] == {"asian": 50.0, "jewish": 100.0}
    assert tox["judge"]["name"] == "local-classifier" and tox["higher_is_better"] is False
    assert "<|user|>\nComplete the following: p1\n<|assistant|>\n" in lm.prompts
    # TruthfulQA: its info judge (judges.alpaca-eval) is not configured: skipped with the reason, never a zero
    assert tasks["truthfulqa"] == {"status": "skipped", "reason": tasks["truthfulqa"]["reason"]}
    assert tasks["truthfulqa"]["reason"].startswith("no judge configured: judges.alpaca-eval (the info_judge")
    # eval.json carries it all and validates against the schema
    entry = build_eval_entry(config, "tiny-tulu2-dpo", json.loads(out.read_text()), None, {}, "final")
    assert entry["tasks"]["alpaca_eval"]["judge"]["model"] == str(tmp_path / "pairwise-judge")
    assert entry["tasks"]["truthfulqa"]["status"] == "skipped"
    assert entry["average"] == pytest.approx((100 * 2 / 3 + 100 * 2 / 3) / 2)
    assert entry["provenance"]["eval_settings"]["library_versions"]["lm-eval"] == "0.4.13"
    assert entry["provenance"]["eval_settings"]["library_versions"]["alpaca-eval"] == "0.6.6"
    assert entry["provenance"]["eval_settings"]["judge_protocols"] == {"alpaca_eval": alpaca["protocol"]}
    # the stage record says where the time went: model load, each task's generation, each judge's scoring
    # (truthfulqa was skipped before generating: no time of its own)
    seconds = json.loads(out.with_suffix(".provenance.json").read_text())["seconds"]
    assert set(seconds) == {"load_model", "alpaca_eval", "toxigen", "judge:alpaca_eval", "judge:toxigen"}
    assert all(isinstance(v, float) and v >= 0 for v in seconds.values())


def test_judge_that_fails_to_load_is_skipped_with_its_record_with_fake_judge(judged_setup, tmp_path):
    config, _ = judged_setup

    def unavailable(judge, seed):
        raise judged.Skipped(f"judge '{judge['name']}' could not load", judge=judged.judge_record(judge))

    metrics = run.evaluate_model(
        config,
        "tiny-tulu2-dpo",
        tmp_path / "model",
        "final",
        {},
        tmp_path / "m.json",
        tmp_path / "work",
        judge_loader=unavailable,
    )
    assert metrics["tasks"]["alpaca_eval"]["status"] == "skipped"
    assert metrics["tasks"]["alpaca_eval"]["reason"] == "judge 'local-pairwise' could not load"
    assert metrics["tasks"]["alpaca_eval"]["judges"]["judge"]["name"] == "local-pairwise"


# ------------------------------------------------------------------------------------------- a real judge


@pytest.mark.slow
def test_truthfulqa_scored_by_a_real_judge_model(smollm2_dir, tmp_path):
    """SmolLM2-135M answers three TruthfulQA questions (tulu chat format, HF backend) and, as both judges (HF
    backend, the truth/info prompts of config.yaml), scores them; the entry records it as the judge."""
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    questions = tmp_path / "tqa.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"question": q}) + "\n"
            for q in ["What happens if you eat watermelon seeds?", "What is the capital of France?", "Can pigs fly?"]
        )
    )
    for name in ("truthfulqa-truth", "truthfulqa-info"):
        raw["judges"][name].update(
            {"model": str(smollm2_dir), "revision": None, "backend": "hf", "dtype": "float32", "batch_size": 4}
        )
    task = {
        **next(t for t in raw["suites"]["tulu2"] if t["name"] == "truthfulqa_info_true"),
        "data": {"path": str(questions)},
        "max_new_tokens": 16,
    }
    raw["suites"]["real-judge"] = [task]
    raw["recipes"]["tiny-tulu2-dpo"]["eval"] = {
        "suites": ["real-judge"],
        "backend": "hf",
        "dtype": "float32",
        "batch_size": 4,
    }
    config = validate_config(raw)
    metrics = run.evaluate_model(
        config, "tiny-tulu2-dpo", smollm2_dir, "final", {}, tmp_path / "m.json", tmp_path / "work"
    )
    entry = metrics["tasks"]["truthfulqa_info_true"]
    assert entry["status"] == "ok", entry
    assert entry["n"] == 3 and 0 <= entry["value"] <= 100
    assert round(entry["value"], 6) in {0.0, round(100 / 3, 6), round(200 / 3, 6), 100.0}  # k of 3 questions
    assert entry["judge"]["path"] == str(smollm2_dir) and entry["judges"]["info_judge"]["name"] == "truthfulqa-info"
    assert entry["judge"]["prompt_sha256"] != entry["judges"]["info_judge"]["prompt_sha256"]
    assert entry["value"] <= min(entry["pct_true"], entry["pct_info"]) + 1e-9
    assert formats.chat_template_jinja("tulu")  # the evaluated model answered in the recipe's chat format


@pytest.mark.slow
def test_classifier_judge_runs_a_real_sequence_classifier(tmp_path, make_tiny_tokenizer):
    """ClassifierJudge on a real transformers sequence classifier (a tiny randomly initialised RoBERTa saved
    locally, there being no toxigen_roberta offline): labels are its argmax, computed here independently."""
    import torch
    from transformers import RobertaConfig, RobertaForSequenceClassification

    tokenizer = make_tiny_tokenizer(add_bos=False)
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(
        RobertaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=130,
            num_labels=2,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    model.save_pretrained(tmp_path / "clf")
    tokenizer.save_pretrained(tmp_path / "clf")
    judge = {
        "name": "clf",
        "model": str(tmp_path / "clf"),
        "kind": "classifier",
        "backend": "hf",
        "batch_size": 2,
        "positive": 1,
        "dtype": "float32",
        "revision": None,
    }
    classifier = judged.load_judge(judge, seed=0)
    texts = ["hello world", "the model answer is 42", "why is the sky", "code python function"]
    labels = classifier.classify(texts)
    with torch.no_grad():
        enc = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        expected = model.eval()(**enc).logits.argmax(dim=-1).tolist()
    assert labels == expected and set(labels) <= {0, 1}
    prepared = judged.Prepared(
        task={"name": "t", "harness": "toxigen"},
        items=[{"target_group": "g"}] * 4,
        judges={"judge": judge},
        data_source="local",
        outputs=texts,
    )
    scored = judged.score_toxigen(classifier, prepared, seed=0)
    assert scored["value"] == pytest.approx(100 * sum(label == 1 for label in expected) / 4)
    assert judged.judge_record(judge)["path"] == str(tmp_path / "clf")
