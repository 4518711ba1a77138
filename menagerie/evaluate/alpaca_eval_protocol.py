"""AlpacaEval's own protocol, run through the installed `alpaca_eval` package: its annotator config and prompt
template (read from the package at run time, never copied here), its randomised output order (seeded by the
instruction and the annotator's seed), its completion parser and its win rate (draws count one half, verdicts the
parser cannot read are left out). Only the decoder is menagerie's choice:

- an API judge (`backend: api`) goes through the package's own `openai_completions`, with the judge's model name,
  endpoint and key (from the environment, never recorded);
- a local judge (`backend: vllm` or `hf`) answers the same prompts through menagerie's runner: each ChatML prompt of
  the template is turned into messages (the package's `prompt_to_chatml`) and rendered with the judge's own chat
  template, as the package's `vllm_local_completions(is_chatml_prompt=True)` does; greedy, the annotator's
  `max_tokens`.

[T2] reports AlpacaEval 1: win rate against text-davinci-003's outputs, judged by GPT-4 with the package's
`alpaca_eval_gpt4` annotator (the AlpacaEval 1 default; [OI] eval/alpaca_farm/run_eval.py calls the package's
`evaluate`, which compares reference outputs (output_1) with the model's (output_2)).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import time
from pathlib import Path

from menagerie.errors import MenagerieError

DEFAULT_ANNOTATOR = "alpaca_eval_gpt4"


def configs_dir() -> Path:
    """The package's evaluators_configs folder, found without importing the package (its import is slow and reads a
    .env file)."""
    spec = importlib.util.find_spec("alpaca_eval")
    if spec is None or not spec.submodule_search_locations:
        raise MenagerieError("AlpacaEval needs the alpaca-eval package (in uv.lock); run `make env`")
    return Path(next(iter(spec.submodule_search_locations))) / "evaluators_configs"


def annotator_config(name: str) -> dict:
    """{name, settings (the package's configs.yaml entry), template (its text), template_sha256, version}."""
    import yaml
    from importlib import metadata

    path = configs_dir() / name / "configs.yaml"
    if not path.is_file():
        known = sorted(p.parent.name for p in configs_dir().glob("*/configs.yaml"))
        raise MenagerieError(
            f"AlpacaEval annotator '{name}' is not one of the alpaca-eval package's "
            f"evaluators_configs ({', '.join(known)})"
        )
    entries = yaml.safe_load(path.read_text())
    if len(entries) != 1:
        raise MenagerieError(
            f"AlpacaEval annotator '{name}' is a pool of {len(entries)} annotators; menagerie runs "
            f"single-annotator configs"
        )
    settings = next(iter(entries.values()))
    template = (configs_dir() / settings["prompt_template"]).read_text()
    return {
        "name": name,
        "settings": settings,
        "template": template,
        "template_sha256": hashlib.sha256(template.encode()).hexdigest(),
        "version": metadata.version("alpaca-eval"),
    }


def provenance(annotator: dict, seed: int | None = None) -> dict:
    """What eval.json records about the protocol (no key, no endpoint secrets)."""
    settings = annotator["settings"]
    record = {
        "package": "alpaca-eval",
        "version": annotator["version"],
        "annotator": annotator["name"],
        "template": settings["prompt_template"],
        "template_sha256": annotator["template_sha256"],
        "completion_parser": settings.get("fn_completion_parser"),
        "completions_kwargs": dict(settings.get("completions_kwargs") or {}),
        "metric": "get_winrate",
    }
    if seed is not None:
        record["order_seed"] = seed
    return record


def local_completions(judge):
    """A `fn_completions` for the package that answers through `judge` (menagerie's GenerativeJudge, or a stand-in
    with the same `chat(messages)` / `generate(prompts, max_new_tokens)`)."""
    from alpaca_eval.utils import prompt_to_chatml

    def completions(prompts, max_tokens: int = 100, temperature: float = 0.0, **_ignored) -> dict:
        if temperature:
            raise MenagerieError(
                f"AlpacaEval annotator samples at temperature {temperature}; menagerie's local "
                f"judges decode greedily (temperature 0)"
            )
        started = time.perf_counter()
        rendered = [judge.chat(prompt_to_chatml(p)) for p in prompts]
        texts = judge.generate(rendered, max_tokens)
        per_item = (time.perf_counter() - started) / max(len(prompts), 1)
        return {
            "completions": list(texts),
            "price_per_example": [float("nan")] * len(texts),
            "time_per_example": [per_item] * len(texts),
        }

    return completions


def api_completions(judge: dict):
    """The package's `openai_completions` aimed at the judge's endpoint and key (read from the environment here; the
    package's own client-config file and OPENAI_* variables are not consulted); the model name goes in through
    annotate(model_name=...), over the annotator config's."""
    from functools import partial

    from alpaca_eval.decoders.openai import openai_completions

    key = os.environ.get(judge["api_key_env"])
    if not key:
        raise MenagerieError(f"judge '{judge['name']}': environment variable {judge['api_key_env']} is not set")
    # client_config_path: a path that is no file makes the package build its client from the arguments below
    return partial(
        openai_completions,
        client_config_path=os.devnull,
        openai_api_keys=[key],
        openai_api_base=judge["api_base"],
        openai_organization_ids=None,
    )


def annotate(
    annotator: dict,
    instructions: list[str],
    references: list[str],
    outputs: list[str],
    fn_completions,
    model_name: str | None = None,
) -> tuple[list[dict], int]:
    """The package's PairwiseAnnotator over (reference = output_1, model = output_2) pairs, in item order, with
    its decoder replaced by `fn_completions`; returns (its annotations, the annotator's seed). `preference` is 1
    (reference preferred), 2 (model preferred), 1.5 (identical outputs, not sent to the judge), None (the parser
    could not read the verdict)."""
    root = logging.getLogger()
    level = root.level
    try:
        # importing the package sets the root logger to INFO
        from alpaca_eval.annotators.pairwise_evaluator import PairwiseAnnotatorLocal
    finally:
        root.setLevel(level)
    pool = PairwiseAnnotatorLocal(annotators_config=annotator["name"])  # no cache file, the package's seed
    root.setLevel(level)
    for single in pool.annotators.values():
        single.fn_completions = fn_completions
        if model_name is not None:
            single.completions_kwargs = {**single.completions_kwargs, "model_name": model_name}
    reference = [{"instruction": i, "output": r, "generator": "reference"} for i, r in zip(instructions, references)]
    model = [{"instruction": i, "output": o, "generator": "model"} for i, o in zip(instructions, outputs)]
    try:
        annotations = pool.annotate_head2head(outputs_1=reference, outputs_2=model, is_ordered=True)
    finally:
        root.setLevel(level)
    return annotations, pool.seed


def win_rate(annotations: list[dict]) -> dict:
    """The package's get_winrate (AlpacaEval 1's metric): win_rate, standard_error, n_wins, n_wins_base, n_draws,
    n_total over the readable verdicts, plus discrete_win_rate."""
    from alpaca_eval.metrics import get_winrate

    preferences = [float("nan") if a.get("preference") is None else float(a["preference"]) for a in annotations]
    raw = get_winrate([{"preference": p} for p in preferences])
    return {k: (float(v) if k.endswith("rate") or k == "standard_error" else int(v)) for k, v in raw.items()}
