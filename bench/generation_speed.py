"""Generation throughput of the two eval backends on the same prompts, in one run: vLLM (default) vs HF generate.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/generation_speed.py [--prompts 32] [--max-new-tokens 128] [--dtype bfloat16]

Both backends go through the lm-eval model objects the evaluate stage uses (menagerie.evaluate.harness.load_lm), on
resources/models/smollm2-135m (build it with `make run`, or the tests' .cache/test-models copy), with greedy
chat-formatted prompts and the same batch size. Prints start-up seconds (import + engine/model load), generation
seconds, output tokens/s for each, and the ratio vLLM/HF (target >= 3). Output tokens are counted with the same
tokenizer on the returned text. Run it on a quiet machine: the 1-minute load average is printed as a warning sign.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOPICS = ["rain", "the sea", "a city at night", "autumn", "a library", "mountains", "a train journey", "coffee"]
TASKS = [
    "Write a short story about {}.",
    "Describe {} in detail.",
    "Write a poem about {}.",
    "Explain why people like {}.",
]


def prompts(n: int) -> list[str]:
    return [TASKS[i % len(TASKS)].format(TOPICS[(i // len(TASKS)) % len(TOPICS)]) for i in range(n)]


def find_model() -> Path:
    for candidate in (REPO / "resources/models/smollm2-135m", REPO / ".cache/test-models/smollm2-135m"):
        if (candidate / "config.json").exists():
            return candidate
    raise SystemExit("no SmolLM2-135M found: run `make run` (or the vLLM tests) first to build it")


def measure(
    backend: str, model_dir: Path, questions: list[str], max_new_tokens: int, dtype: str, batch_size: int
) -> dict:
    from lm_eval.api.instance import Instance

    from menagerie.evaluate import harness

    start = time.perf_counter()
    lm = harness.load_lm(model_dir, "tulu", backend, dtype, batch_size, seed=0)
    loaded = time.perf_counter()
    rendered = [lm.apply_chat_template([{"role": "user", "content": q}]) for q in questions]
    # no stop sequence but EOS: every backend generates up to max_new_tokens unless the model ends its answer
    requests = [
        Instance("generate_until", None, (p, {"until": [], "max_gen_toks": max_new_tokens, "do_sample": False}), i)
        for i, p in enumerate(rendered)
    ]
    begin = time.perf_counter()
    texts = lm.generate_until(requests)
    seconds = time.perf_counter() - begin
    tokens = sum(len(lm.tokenizer.encode(t, add_special_tokens=False)) for t in texts)
    return {
        "startup_s": round(loaded - start, 1),
        "generate_s": round(seconds, 2),
        "output_tokens": tokens,
        "output_tok_per_s": round(tokens / seconds, 1),
        "texts": texts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--order", choices=["hf-first", "vllm-first"], default="vllm-first")
    args = parser.parse_args()

    import torch

    model_dir = find_model()
    questions = prompts(args.prompts)
    order = ["vllm", "hf"] if args.order == "vllm-first" else ["hf", "vllm"]
    runs = {b: measure(b, model_dir, questions, args.max_new_tokens, args.dtype, args.batch_size) for b in order}
    same = sum(a == b for a, b in zip(runs["vllm"].pop("texts"), runs["hf"].pop("texts")))
    result = {
        "model": str(model_dir.relative_to(REPO)),
        "prompts": args.prompts,
        "max_new_tokens": args.max_new_tokens,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        **runs,
        "identical_outputs": f"{same}/{args.prompts}",
        "ratio_vllm_over_hf": round(runs["vllm"]["output_tok_per_s"] / runs["hf"]["output_tok_per_s"], 2),
        "target": 3.0,
    }
    result["within_target"] = result["ratio_vllm_over_hf"] >= 3.0
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
