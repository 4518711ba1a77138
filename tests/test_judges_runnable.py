"""The judges runnable: AlpacaEval's win rate checked against hand-computed values; an API judge (OpenAI-compatible
chat completions, key from the environment) skipped with the reason without a key and exercised against a local
stand-in server (no API can be reached here: `fake_api_server`); and, slow, the tiny model itself as a local judge
on the vLLM backend running the AlpacaEval protocol end to end on a handful of generated instructions."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from menagerie.config import validate_config
from menagerie.evaluate import judged, run

ROOT = Path(__file__).resolve().parents[1]

# model output vs reference: the judge stand-ins prefer the longer text, so the model wins items 0, 1, 2, loses 3
# and 4, and item 5 (equal lengths) gets a verdict naming neither output, which is left out and counted.
ITEMS = [("a much longer answer", "short"), ("long enough reply", "tiny"), ("detailed output", "brief"),
         ("no", "a long reference"), ("meh", "the reference wins"), ("same", "sam3")]


def longer(text: str) -> str:
    found = re.search(r"Output \(a\):\n(.*?)\n\nOutput \(b\):\n(.*?)\n\nWhich", text, re.S)
    a, b = found.groups()
    return "Output (a)" if len(a) > len(b) else "Output (b)" if len(b) > len(a) else "They are equally good."


def prepared(judge: dict) -> judged.Prepared:
    task = {"name": "alpaca_eval", "harness": "alpaca-eval", "metric": "win_rate", "scale": 100,
            "max_new_tokens": 8, "chat_format": True, "limit": None}
    items = [{"instruction": f"instruction {i}", "reference": ref} for i, (_, ref) in enumerate(ITEMS)]
    return judged.Prepared(task=task, items=items, judges={"judge": judge}, data_source="generated",
                           outputs=[out for out, _ in ITEMS])


class LongerOutputJudge:
    """Stand-in judge (fake_judge): answers by rule, the longer output wins."""

    def chat(self, messages):
        return messages[-1]["content"]

    def generate(self, prompts, max_new_tokens, until=None):
        return [longer(p) for p in prompts]


def test_win_rate_by_hand_with_fake_judge():
    judge = {"name": "rule", "model": "rule", "kind": "pairwise", "backend": "hf", "max_new_tokens": 8}
    entry = judged.score(prepared(judge), seed=3, loader=lambda j, s: LongerOutputJudge())
    # wins 1, 1, 1, 0, 0: 3 of 5 parsed verdicts = 60 %; the sample stderr sqrt(0.3 / 5) = 0.2449
    assert entry["value"] == pytest.approx(60.0) and entry["n"] == 5 and entry["unparseable"] == 1
    assert entry["stderr"] == pytest.approx(100 * (0.3 / 5) ** 0.5)
    # the order of each pair is random, the result is not: another seed, same win rate
    assert judged.score(prepared(judge), seed=11, loader=lambda j, s: LongerOutputJudge())["value"] == 60.0


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
    assert info.value.entry["reason"] == ("judge 'alpaca-eval' is an API model (gpt-4-0613 at "
                                          "https://api.openai.com/v1) and the environment variable OPENAI_API_KEY "
                                          "holding its key is not set")


@pytest.fixture
def fake_api_server():
    """A local HTTP stand-in for an OpenAI-compatible /chat/completions endpoint (the longer output wins)."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            reply = json.dumps({"choices": [{"message": {"role": "assistant",
                                                         "content": longer(body["messages"][-1]["content"])}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(reply.encode())

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    server.shutdown()


def test_api_judge_speaks_chat_completions_with_fake_api_server(fake_api_server, monkeypatch):
    base, seen = fake_api_server
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test-123")
    config = api_judge(api_base=base, api_key_env="MY_JUDGE_KEY", max_new_tokens=8)
    judge = {"name": "alpaca-eval", **config["judges"]["alpaca-eval"]}
    entry = judged.score(prepared(judge), seed=3)          # the real APIJudge, through load_judge
    assert entry["value"] == pytest.approx(60.0) and entry["n"] == 5 and entry["unparseable"] == 1
    assert len(seen) == 6 and {s["path"] for s in seen} == {"/v1/chat/completions"}
    assert {s["auth"] for s in seen} == {"Bearer sk-test-123"}
    body = seen[0]["body"]
    assert body["model"] == "gpt-4-0613" and body["temperature"] == 0 and body["max_tokens"] == 8
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert entry["judge"]["backend"] == "api" and entry["judge"]["api_base"] == base
    assert "sk-test-123" not in json.dumps(entry)          # the key is never recorded


@pytest.mark.slow
def test_alpaca_eval_end_to_end_with_the_tiny_model_as_local_vllm_judge(smollm2_dir, tmp_path):
    """SmolLM2-135M answers five generated instructions (the tiny twin's recipe, vLLM backend) and, as the local
    pairwise judge on the same vLLM backend, compares each answer with the reference: the AlpacaEval code path for
    real. Its verdicts are whatever a 135M model says; the entry must account for every item."""
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps([{"instruction": f"What is {a} plus {b}?", "output": f"{a} plus {b} is {a + b}.",
                                 "generator": "reference", "dataset": "generated"}
                                for a, b in ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10))]))
    raw["judges"]["alpaca-eval"] = {"model": str(smollm2_dir), "kind": "pairwise", "backend": "vllm",
                                    "dtype": "float32", "batch_size": 8, "max_new_tokens": 8}
    task = {**next(t for t in raw["suites"]["tulu2"] if t["name"] == "alpaca_eval"), "data": {"path": str(data)},
            "max_new_tokens": 24}
    raw["suites"]["alpaca-tiny"] = [task]
    raw["recipes"]["tiny-tulu2-dpo"]["eval"] = {"suites": ["alpaca-tiny"], "backend": "vllm", "dtype": "float32",
                                                "batch_size": 8}
    config = validate_config(raw)
    metrics = run.evaluate_model(config, "tiny-tulu2-dpo", smollm2_dir, "final", {}, tmp_path / "m.json",
                                 tmp_path / "work")
    entry = metrics["tasks"]["alpaca_eval"]
    if entry["status"] == "skipped":      # a 135M judge may never name an output; that must be said, not scored
        assert entry["reason"].startswith("the judge gave no parseable verdict")
        return
    assert entry["n"] + entry["unparseable"] == 5 and 0 <= entry["value"] <= 100
    assert round(entry["value"] * entry["n"] / 100, 6) == round(round(entry["value"] * entry["n"] / 100))
    assert entry["judge"]["backend"] == "vllm" and entry["judge"]["path"] == str(smollm2_dir)
    assert entry["data"] == str(data)
