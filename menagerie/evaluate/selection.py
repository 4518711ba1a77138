"""Which items a suite task evaluates, as the reference implementation chose them.

`select: {method: open-instruct, seed: 42}` reproduces open-instruct's eval scripts ([OI] eval/gsm/run_eval.py,
eval/bbh/run_eval.py, eval/tydiqa/run_eval.py at the Tulu 2 release): `random.seed(42)` once, then for each task in
turn `random.sample(items, N)` when it holds more than N items (all of them, and no draw, otherwise); with
`exemplars: sampled`, after every task's items, each task's `num_fewshot` exemplars are drawn from its few-shot
split with the same generator (`random.sample(train, n_shot)`, always drawn: [OI] tydiqa). One generator runs through
a group's members in name order ([OI] bbh walks the task files in glob order and tydiqa the sorted language names;
the two agree with name order for tydiqa, and for bbh on a file system that lists files alphabetically).
`random.sample` draws positions from the population's length alone, so sampling positions here selects the same
items as sampling the items themselves.

`truncate: {field: context, max_tokens: 512}` cuts a text field of every evaluated item and exemplar as [OI] tydiqa
does with the evaluated model's tokenizer: `ids = tokenizer.encode(text)`; when longer than max_tokens,
`text = tokenizer.decode(ids[:max_tokens])` (encode adds the tokenizer's special tokens, e.g. Llama's BOS, which
then counts among the 512 and is decoded into the text, `skip_special_tokens` being off; reproduced as is).

`fit_prompt: {max_tokens: 2048}` drops exemplars as [OI] eval/mmlu/run_eval.py does: when an item's k-shot prompt
(as the model gets it: chat format, generation prefix and all) is longer than max_tokens tokens of the evaluated
model's tokenizer (`tokenizer(prompt, add_special_tokens=False)`), it is rebuilt with k-1 exemplars (the last one
dropped), and so on until it fits or no exemplar is left.
"""

from __future__ import annotations

import hashlib
import json
import random

from menagerie.errors import MenagerieError

METHODS = ("first", "open-instruct")


def oi_draw(rng: random.Random, n_items: int, n: int | None) -> list[int]:
    """[OI]: `random.sample(items, n)` if there are more than n items, else every item (no draw)."""
    if n is not None and n_items > n:
        return rng.sample(range(n_items), n)
    return list(range(n_items))


def oi_plan(
    sizes: dict[str, int], n: int | None, seed: int, fewshot_sizes: dict[str, int] | None = None, shots: int = 0
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """({task: evaluated positions}, {task: exemplar positions in its few-shot split}) for tasks in name order
    sharing one generator seeded with `seed` (exemplars drawn after every task's items, only if fewshot_sizes)."""
    rng = random.Random(seed)
    items = {name: oi_draw(rng, sizes[name], n) for name in sorted(sizes)}
    exemplars: dict[str, list[int]] = {}
    if fewshot_sizes is not None and shots:
        for name in sorted(fewshot_sizes):
            if fewshot_sizes[name] < shots:
                raise MenagerieError(
                    f"lm-eval task '{name}': {shots} exemplars wanted, its few-shot split has {fewshot_sizes[name]}"
                )
            exemplars[name] = rng.sample(range(fewshot_sizes[name]), shots)
    return items, exemplars


def truncate_text(text: str, tokenizer, max_tokens: int) -> str:
    """[OI] tydiqa's passage cut (see the module docstring)."""
    ids = tokenizer.encode(text)
    return tokenizer.decode(ids[:max_tokens]) if len(ids) > max_tokens else text


def _truncated(doc: dict, field: str, tokenizer, max_tokens: int) -> dict:
    if field not in doc:
        raise MenagerieError(
            f"truncate.field '{field}' is not a field of the task's items (fields: {', '.join(sorted(doc))})"
        )
    return {**doc, field: truncate_text(doc[field], tokenizer, max_tokens)}


def prompt_tokens(prompt, tokenizer) -> int:
    """[OI] mmlu: len(tokenizer(prompt, truncation=False, add_special_tokens=False).input_ids); the longest
    context of a multiple-input item."""
    prompts = prompt if isinstance(prompt, list) else [prompt]
    return max(len(tokenizer(p, truncation=False, add_special_tokens=False)["input_ids"]) for p in prompts)


def fit_exemplars(build, num_fewshot: int, tokenizer, max_tokens: int):
    """(prompt, shots): `build(k)` with the largest k <= num_fewshot whose prompt fits max_tokens ([OI] mmlu: one
    exemplar dropped at a time); k = 0 is kept even when it does not fit."""
    shots = num_fewshot
    prompt = build(shots)
    while shots > 0 and prompt_tokens(prompt, tokenizer) > max_tokens:
        shots -= 1
        prompt = build(shots)
    return prompt, shots


def needs_preparing(task: dict) -> bool:
    return (
        (task.get("select") or {}).get("method", "first") != "first"
        or bool(task.get("truncate"))
        or bool(task.get("fit_prompt"))
    )


def prepare(task: dict, leaves: dict, tokenizer) -> tuple[dict[str, list[int]] | None, dict]:
    """Apply the suite task's `select` and `truncate` to lm-eval's built task objects `leaves` ({name: Task}):
    returns (lm-eval `samples` {task: positions} or None, the record for eval.json)."""
    select = task.get("select") or {"method": "first"}
    truncate = task.get("truncate")
    record: dict = {"method": select["method"]}
    if truncate:
        if tokenizer is None:
            raise MenagerieError(f"suite task '{task['name']}': truncate needs the evaluated model's tokenizer")
        field, max_tokens = truncate["field"], truncate["max_tokens"]
        for leaf in leaves.values():
            _truncate_docs(leaf, field, tokenizer, max_tokens)
        record["truncate"] = {
            "field": field,
            "max_tokens": max_tokens,
            "tokenizer": getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__,
        }
    fit = task.get("fit_prompt")
    if fit and task.get("num_fewshot"):
        if tokenizer is None:
            raise MenagerieError(f"suite task '{task['name']}': fit_prompt needs the evaluated model's tokenizer")
        kept: dict[str, int] = {}  # filled while lm-eval builds the prompts: {shots: items}
        for leaf in leaves.values():
            _fit_prompts(leaf, tokenizer, fit["max_tokens"], kept)
        record["fit_prompt"] = {
            "max_tokens": fit["max_tokens"],
            "shots": kept,
            "tokenizer": getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__,
        }
    if select["method"] == "first":
        return None, record
    limit = task.get("limit")
    if isinstance(limit, dict):
        raise MenagerieError(
            f"suite task '{task['name']}': select.method {select['method']} takes an integer "
            f"`limit` (N items per task), got a mapping"
        )
    sizes = {name: len(leaf.eval_docs) for name, leaf in leaves.items()}
    shots = task.get("num_fewshot") or 0
    fewshot_sizes = None
    if select.get("exemplars") == "sampled" and shots:
        pools = {name: _fewshot_pool(leaf, name) for name, leaf in leaves.items()}
        fewshot_sizes = {name: len(pool) for name, pool in pools.items()}
    items, exemplars = oi_plan(sizes, limit, select["seed"], fewshot_sizes, shots)
    for name, positions in exemplars.items():
        _use_exemplars(leaves[name], [pools[name][i] for i in positions])
    record.update(
        {
            "seed": select["seed"],
            "n_per_task": limit,
            "items_sha256": hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest(),
        }
    )
    if exemplars:
        record["exemplars"] = exemplars
    return items, record


def _fewshot_pool(leaf, name: str) -> list[dict]:
    sampler = getattr(leaf, "sampler", None)
    if sampler is None:
        raise MenagerieError(f"lm-eval task '{name}' has no few-shot split to draw exemplars from")
    return list(sampler.df)


def _use_exemplars(leaf, docs: list[dict]) -> None:
    """The task's few-shot context = exactly `docs`, in this order (lm-eval's first_n sampler over them)."""
    from lm_eval.api.samplers import FirstNSampler

    leaf.sampler = FirstNSampler(docs, rnd=None)


def _truncate_docs(leaf, field: str, tokenizer, max_tokens: int) -> None:
    """Cut `field` in the task's evaluated items (its process_docs, wrapped) and its few-shot pool."""
    original = leaf.config.process_docs

    def cut(dataset):
        docs = original(dataset) if original is not None else dataset
        return docs.map(lambda doc: {field: truncate_text(doc[field], tokenizer, max_tokens)})

    if field not in leaf.eval_docs.column_names:
        raise MenagerieError(
            f"truncate.field '{field}' is not a field of lm-eval task '{leaf.config.task}' "
            f"(fields: {', '.join(leaf.eval_docs.column_names)})"
        )
    leaf.config.process_docs = cut
    sampler = getattr(leaf, "sampler", None)
    if sampler is not None:
        sampler.df = [_truncated(dict(doc), field, tokenizer, max_tokens) for doc in sampler.df]


def _fit_prompts(leaf, tokenizer, max_tokens: int, shots: dict[str, int]) -> None:
    """The task's fewshot_context drops exemplars until the prompt fits (fit_exemplars); `shots` counts the items
    per number of exemplars kept."""
    original = leaf.fewshot_context

    def fitted(doc, num_fewshot, **kwargs):
        prompt, kept = fit_exemplars(
            lambda k: original(doc, num_fewshot=k, **kwargs), num_fewshot, tokenizer, max_tokens
        )
        shots[str(kept)] = shots.get(str(kept), 0) + 1
        return prompt

    leaf.fewshot_context = fitted
