"""The judges runnable, with AlpacaEval's own protocol (the alpaca-eval package's alpaca_eval_gpt4 annotator: its
prompt template, ranking parser, seeded output order and win rate): the win rate checked against hand-computed
values (wins, losses, a tie, a verdict the parser cannot read); the order of each pair as the package seeds it; an
API judge going through the package's OpenAI client, skipped with the reason without a key and exercised against a
local stand-in server (no API can be reached here: `fake_api_server`); and, slow, the tiny model itself as a local
judge on the vLLM backend running the protocol end to end on a handful of generated instructions."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from menagerie.config import validate_config
from menagerie.evaluate import alpaca_eval_protocol, judged, run

ROOT = Path(__file__).resolve().parents[1]

# (model output, reference output): the rule judges below prefer the longer text, so the model wins items 0-2 and
# loses 3-4; item 5's outputs have equal lengths and the judge answers something the ranking parser cannot read
# (left out, counted); item 6's outputs are identical: a draw (1/2) that the package decides without the judge.
ITEMS = [
    ("a much longer answer", "short"),
    ("long enough reply", "tiny"),
    ("detailed output", "brief"),
    ("no", "a long reference"),
    ("meh", "the reference wins"),
    ("same", "sam3"),
    ("identical", "identical"),
]
RANKED_1 = "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]"
RANKED_2 = "[{'model': 'model_1', 'rank': 2}, {'model': 'model_2', 'rank': 1}]"


def shown(content: str) -> list[str]:
    """The two answers as the annotator's template shows them (model_1 first)."""
    return re.findall(r'"answer": """(.*?)"""', content, re.S)


def longer(content: str) -> str:
    first, second = shown(content)
    return RANKED_1 if len(first) > len(second) else RANKED_2 if len(second) > len(first) else "equally good"


def prepared(judge: dict, items=ITEMS) -> judged.Prepared:
    task = {
        "name": "alpaca_eval",
        "harness": "alpaca-eval",
        "metric": "win_rate",
        "scale": 100,
        "max_new_tokens": 8,
        "chat_format": True,
        "limit": None,
        "annotator": "alpaca_eval_gpt4",
    }
    rows = [{"instruction": f"instruction {i}", "reference": ref} for i, (_, ref) in enumerate(items)]
    return judged.Prepared(
        task=task, items=rows, judges={"judge": judge}, data_source="generated", outputs=[out for out, _ in items]
    )


class RuleJudge:
    """Stand-in local judge (fake_judge): gets the annotator's chat messages, answers by `rule` (the longer output
    wins by default), records what it was asked."""

    def __init__(self, rule=longer):
        self.rule = rule
        self.asked: list[list[dict]] = []
        self.max_new_tokens: list[int] = []

    def chat(self, messages):
        return messages

    def generate(self, prompts, max_new_tokens, until=None):
        self.asked += prompts
        self.max_new_tokens.append(max_new_tokens)
        return [self.rule(messages[-1]["content"]) for messages in prompts]


LOCAL = {"name": "rule", "model": "rule", "kind": "pairwise", "backend": "hf", "max_new_tokens": 8}


def by_hand(preferences: list[float]) -> tuple[float, float]:
    """AlpacaEval 1's win rate: mean of (preference - 1) over readable verdicts, draws 1/2; its sample stderr."""
    values = [p - 1 for p in preferences]
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return 100 * mean, 100 * sd / math.sqrt(len(values))


def test_win_rate_by_hand_with_ties_and_a_parse_failure_with_fake_judge():
    judge = RuleJudge()
    entry = judged.score(prepared(LOCAL), seed=3, loader=lambda j, s: judge)
    # wins 1, 1, 1; losses 0, 0; the tie 1/2; the unreadable verdict left out: 3.5 / 6
    value, stderr = by_hand([2, 2, 2, 1, 1, 1.5])
    assert value == pytest.approx(100 * 3.5 / 6)
    assert entry["value"] == pytest.approx(value) and entry["stderr"] == pytest.approx(stderr)
    assert (entry["n"], entry["n_wins"], entry["n_losses"], entry["n_draws"], entry["unparseable"]) == (6, 3, 2, 1, 1)
    assert entry["preferences"] == [2.0, 2.0, 2.0, 1.0, 1.0, None, 1.5]
    assert len(judge.asked) == 6  # identical outputs are a draw without asking the judge
    assert judge.max_new_tokens == [100]  # the annotator's max_tokens, not the judge's own 8


def test_the_judge_sees_the_packages_template_and_the_entry_records_the_protocol_with_fake_judge():
    judge = RuleJudge()
    entry = judged.score(prepared(LOCAL), seed=3, loader=lambda j, s: judge)
    configs = alpaca_eval_protocol.configs_dir() / "alpaca_eval_gpt4"
    template = (configs / "alpaca_eval.txt").read_text()
    settings = yaml.safe_load((configs / "configs.yaml").read_text())["alpaca_eval_gpt4"]
    system = re.search(r"<\|im_start\|>system\n(.*?)\n<\|im_end\|>", template, re.S).group(1)
    for messages in judge.asked:  # ChatML turned into messages, as the package's local decoders do
        assert [m["role"] for m in messages] == ["system", "user"] and messages[0]["content"] == system
        assert messages[1]["content"].startswith(template.split("<|im_start|>user\n")[1].split("{")[0].strip())
    pairs = {i: sorted(shown(m[1]["content"])) for i, m in enumerate(judge.asked)}
    assert sorted(pairs.values()) == sorted(sorted(p) for p in ITEMS[:6])
    assert entry["protocol"] == {
        "package": "alpaca-eval",
        "version": metadata.version("alpaca-eval"),
        "annotator": "alpaca_eval_gpt4",
        "template": "alpaca_eval_gpt4/alpaca_eval.txt",
        "template_sha256": hashlib.sha256(template.encode()).hexdigest(),
        "completion_parser": "ranking_parser",
        "completions_kwargs": settings["completions_kwargs"],
        "metric": "get_winrate",
        "order_seed": 0,
    }


def test_output_order_is_the_packages_seeded_per_instruction_with_fake_judge():
    """A judge that always ranks the first-shown output best: the model wins exactly where the package shows it
    first, which it decides by random.Random("is_switched_outputs" + instruction + str(seed)) with the annotator's
    seed 0 (AlpacaEval's `evaluate`), whatever menagerie's run seed."""
    items = [(f"model answer {i}", f"reference answer {i}") for i in range(24)]
    judge = RuleJudge(rule=lambda content: RANKED_1)
    entry = judged.score(prepared(LOCAL, items), seed=1234, loader=lambda j, s: judge)
    switched = [
        random.Random(f"is_switched_outputs{'instruction ' + str(i)}0").choices([False, True])[0]
        for i in range(len(items))
    ]
    assert 0 < sum(switched) < len(items)  # both orders occur
    assert entry["preferences"] == [2.0 if s else 1.0 for s in switched]
    assert entry["value"] == pytest.approx(100 * sum(switched) / len(items))
    for messages in judge.asked:
        first = shown(messages[1]["content"])[0]
        i = int(first.split()[-1])
        assert first == (items[i][0] if switched[i] else items[i][1])


def test_no_readable_verdict_is_skipped_with_the_protocol_recorded_with_fake_judge():
    judge = RuleJudge(rule=lambda content: "Both are fine.")
    with pytest.raises(judged.Skipped) as info:
        judged.score(prepared(LOCAL, ITEMS[:3]), seed=3, loader=lambda j, s: judge)
    assert info.value.entry["reason"] == (
        "the judge gave no verdict that AlpacaEval's parser (ranking_parser) could read"
    )
    assert info.value.entry["protocol"]["annotator"] == "alpaca_eval_gpt4"


def test_unknown_annotator_is_named(config):
    task = {**next(t for t in config["suites"]["tulu2"] if t["name"] == "alpaca_eval")}
    assert task["annotator"] == "alpaca_eval_gpt4"  # [T2]'s, declared in config.yaml
    with pytest.raises(
        Exception,
        match=r"AlpacaEval annotator 'alpaca_eval_gpt5' is not one of the alpaca-eval "
        r"package's evaluators_configs \(.*alpaca_eval_gpt4",
    ):
        alpaca_eval_protocol.annotator_config("alpaca_eval_gpt5")


def api_judge(**extra) -> dict:
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["judges"]["alpaca-eval"] = {"model": "gpt-4-0613", "kind": "pairwise", "backend": "api", **extra}
    return validate_config(raw)


def test_api_judge_without_its_key_is_skipped_with_the_reason(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = api_judge()
    task = next(t for t in config["suites"]["tulu2"] if t["name"] == "alpaca_eval")
    with pytest.raises(judged.Skipped) as info:
        judged.prepare(config, task)
    assert info.value.entry["reason"] == (
        "judge 'alpaca-eval' is an API model (gpt-4-0613 at "
        "https://api.openai.com/v1) and the environment variable OPENAI_API_KEY "
        "holding its key is not set"
    )


@pytest.fixture
def fake_api_server():
    """A local HTTP stand-in for an OpenAI-compatible /chat/completions endpoint (the longer output wins)."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            reply = json.dumps(
                {
                    "id": "cmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": longer(body["messages"][-1]["content"])},
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply.encode())

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    server.shutdown()


def test_api_judge_goes_through_the_packages_openai_client_with_fake_api_server(fake_api_server, monkeypatch):
    base, seen = fake_api_server
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test-123")
    config = api_judge(api_base=base, api_key_env="MY_JUDGE_KEY")
    judge = {"name": "alpaca-eval", **config["judges"]["alpaca-eval"]}
    entry = judged.score(prepared(judge), seed=3)  # the real APIJudge, through load_judge
    assert entry["value"] == pytest.approx(by_hand([2, 2, 2, 1, 1, 1.5])[0]) and entry["unparseable"] == 1
    assert len(seen) == 6 and {s["path"] for s in seen} == {"/v1/chat/completions"}
    assert {s["auth"] for s in seen} == {"Bearer sk-test-123"}
    body = seen[0]["body"]
    # the annotator's decoding settings, the judge's model name
    assert body["model"] == "gpt-4-0613" and body["temperature"] == 0 and body["max_tokens"] == 100
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert entry["judge"]["backend"] == "api" and entry["judge"]["api_base"] == base
    assert entry["protocol"]["completions_kwargs"]["model_name"] == "gpt-4-0613"
    assert "sk-test-123" not in json.dumps(entry)  # the key is never recorded


def test_api_that_does_not_answer_is_skipped_with_the_reason(monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test-123")
    config = api_judge(api_base=f"http://127.0.0.1:{port}/v1", api_key_env="MY_JUDGE_KEY")
    judge = {"name": "alpaca-eval", **config["judges"]["alpaca-eval"]}
    with pytest.raises(judged.Skipped) as info:
        judged.score(prepared(judge, ITEMS[:1]), seed=3)
    assert info.value.entry["reason"].startswith(
        f"judge 'alpaca-eval': the API at http://127.0.0.1:{port}/v1 did not answer (APIConnectionError"
    )
    assert "sk-test-123" not in json.dumps(info.value.entry)


@pytest.mark.slow
def test_alpaca_eval_end_to_end_with_the_tiny_model_as_local_vllm_judge(smollm2_dir, tmp_path):
    """SmolLM2-135M answers five generated instructions (the tiny twin's recipe, vLLM backend) and, as the local
    judge on the same vLLM backend, ranks each answer against the reference with alpaca_eval_gpt4's template and
    parser: the AlpacaEval protocol for real. Its verdicts are whatever a 135M model says; the entry must account
    for every item and record the protocol."""
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    data = tmp_path / "alpaca.json"
    data.write_text(
        json.dumps(
            [
                {
                    "instruction": f"What is {a} plus {b}?",
                    "output": f"{a} plus {b} is {a + b}.",
                    "generator": "reference",
                    "dataset": "generated",
                }
                for a, b in ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10))
            ]
        )
    )
    raw["judges"]["alpaca-eval"] = {
        "model": str(smollm2_dir),
        "kind": "pairwise",
        "backend": "vllm",
        "dtype": "float32",
        "batch_size": 8,
    }
    task = {
        **next(t for t in raw["suites"]["tulu2"] if t["name"] == "alpaca_eval"),
        "data": {"path": str(data)},
        "max_new_tokens": 24,
    }
    raw["suites"]["alpaca-tiny"] = [task]
    raw["recipes"]["tiny-tulu2-dpo"]["eval"] = {
        "suites": ["alpaca-tiny"],
        "backend": "vllm",
        "dtype": "float32",
        "batch_size": 8,
    }
    config = validate_config(raw)
    metrics = run.evaluate_model(
        config, "tiny-tulu2-dpo", smollm2_dir, "final", {}, tmp_path / "m.json", tmp_path / "work"
    )
    entry = metrics["tasks"]["alpaca_eval"]
    assert entry["protocol"]["annotator"] == "alpaca_eval_gpt4" and len(entry["protocol"]["template_sha256"]) == 64
    if entry["status"] == "skipped":  # a 135M judge may never answer in the ranking format: said, not scored
        assert entry["reason"] == "the judge gave no verdict that AlpacaEval's parser (ranking_parser) could read"
        assert entry["judge"]["backend"] == "vllm"
        return
    assert entry["n"] + entry["unparseable"] == 5 and 0 <= entry["value"] <= 100
    readable = [p for p in entry["preferences"] if p is not None]
    assert len(readable) == entry["n"]
    assert entry["value"] == pytest.approx(100 * sum(p - 1 for p in readable) / entry["n"])
    assert entry["judge"]["backend"] == "vllm" and entry["judge"]["path"] == str(smollm2_dir)
    assert entry["data"] == str(data)
