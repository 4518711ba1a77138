"""Items as open-instruct chose them: GSM8K, BBH and TydiQA run on the items (and TydiQA exemplars) that
`random.seed(42)` + `random.sample` pick in [OI] eval/{gsm,bbh,tydiqa}/run_eval.py, with TydiQA's passages cut to
512 tokens by [OI]'s rule. Each expectation is computed here independently, the way [OI]'s scripts do it (module
`random`, sampling the items themselves); the runs go through lm-eval's real task pipeline on generated stand-in
files, answered by tests/lm_eval_stubs.ScriptedLM (a fixed-rule stand-in, no model). The real GSM8K test file in
../shared/data is checked too (opt-in)."""

from __future__ import annotations

import json
import os
import random
import re
import sys
from pathlib import Path

import pytest

from menagerie.config import load_config
from menagerie.errors import MenagerieError
from menagerie.evaluate import harness, selection

sys.path.insert(0, str(Path(__file__).parent))
from lm_eval_stubs import ScriptedLM, tasks_index  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MENAGERIE_SHARED_DATA") or ROOT.parent / "shared" / "data")


@pytest.fixture(scope="module")
def index():
    return tasks_index("bbh/cot_fewshot", "tydiqa", "gsm8k")


@pytest.fixture
def manager(index, monkeypatch):
    monkeypatch.setattr(harness, "task_manager", lambda: index)
    return index


@pytest.fixture(scope="module")
def tulu2():
    return {t["name"]: t for t in load_config(ROOT / "config.yaml")["suites"]["tulu2"]}


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def plain_chat(messages, add_generation_prompt=True):
    return "".join(f"<{m['role']}>{m['content']}" for m in messages)


def oi_sample(items: list, n: int) -> list:
    """[OI]: `random.sample(items, n)` only when there are more than n (the global generator, already seeded)."""
    return random.sample(items, n) if len(items) > n else items


# ------------------------------------------------------------------------------------------- the rule


@pytest.mark.parametrize("sizes,n", [({"t": 1319}, 200), ({"a": 250, "b": 187, "c": 30}, 40)])
def test_plan_equals_sampling_the_items_after_seeding(sizes, n):
    random.seed(42)
    expected = {}
    for name in sorted(sizes):
        items = [f"{name}-{i}" for i in range(sizes[name])]
        expected[name] = oi_sample(items, n)
    items, _ = selection.oi_plan(sizes, n, 42)
    assert {name: [f"{name}-{i}" for i in pos] for name, pos in items.items()} == expected
    assert items["c" if "c" in sizes else "t"] != list(range(n))  # not the first n
    assert selection.oi_plan(sizes, n, 43)[0] != items  # the seed matters


def test_exemplars_are_drawn_after_every_tasks_items_with_the_same_generator():
    random.seed(42)
    dev = {lang: oi_sample(list(range(size)), 100) for lang, size in (("english", 130), ("finnish", 90))}
    train = {lang: random.sample(list(range(size)), 1) for lang, size in (("english", 7), ("finnish", 5))}
    items, exemplars = selection.oi_plan({"english": 130, "finnish": 90}, 100, 42, {"english": 7, "finnish": 5}, 1)
    assert (items, exemplars) == (dev, train)
    assert items["finnish"] == list(range(90))  # 90 <= 100: every item, no draw
    with pytest.raises(MenagerieError, match="2 exemplars wanted, its few-shot split has 1"):
        selection.oi_plan({"x": 3}, 1, 42, {"x": 1}, 2)


def test_truncation_is_open_instructs_rule_bos_included(make_tiny_tokenizer):
    """[OI] tydiqa: tokenizer.encode(context) (special tokens on), decode(ids[:512]) when longer. A Llama-like
    tokenizer's BOS counts among the kept tokens and is decoded into the text."""
    llama_like, plain = make_tiny_tokenizer(add_bos=True), make_tiny_tokenizer(add_bos=False)
    text = "the model answer question data train token loss mask prompt reply " * 5
    for tok in (llama_like, plain):
        ids = tok.encode(text)
        cut = selection.truncate_text(text, tok, 10)
        assert cut == tok.decode(ids[:10]) and len(cut) < len(text)
        assert selection.truncate_text("hello world", tok, 10) == "hello world"  # short: untouched
    assert selection.truncate_text(text, llama_like, 10).startswith("<s>")
    assert not selection.truncate_text(text, plain, 10).startswith("<s>")


def test_fit_exemplars_drops_the_last_exemplar_until_the_prompt_fits(make_tiny_tokenizer):
    """[OI] mmlu: while len(tokenizer(prompt, add_special_tokens=False).input_ids) > 2048, k -= 1 and rebuild."""
    tok = make_tiny_tokenizer(add_bos=True)
    blocks = ["short one. ", "short two. ", "long " * 300, "short four. "]

    def build(k):
        return "".join(blocks[:k]) + "question?"

    assert selection.fit_exemplars(build, 4, tok, 100) == (build(2), 2)  # the long third one and all after it
    assert selection.fit_exemplars(build, 4, tok, 10_000) == (build(4), 4)  # fits: untouched
    # the limit is inclusive and counts no special tokens (the tokenizer's BOS is not added)
    exact = len(tok(build(2), add_special_tokens=False)["input_ids"])
    assert len(tok(build(2))["input_ids"]) == exact + 1
    assert selection.fit_exemplars(build, 2, tok, exact) == (build(2), 2)
    assert selection.fit_exemplars(build, 2, tok, exact - 1)[1] < 2
    # nothing fits: no exemplar left, the item is still asked
    assert selection.fit_exemplars(lambda k: "word " * 400 + "x" * k, 3, tok, 100) == ("word " * 400, 0)


def test_tulu2_suite_declares_open_instructs_selection(tulu2):
    assert tulu2["gsm8k_cot_8shot"]["select"] == {"method": "open-instruct", "seed": 42, "exemplars": "task"}
    assert tulu2["bbh_cot_3shot"]["select"]["method"] == "open-instruct"
    assert tulu2["tydiqa_goldp_1shot"]["select"] == {"method": "open-instruct", "seed": 42, "exemplars": "sampled"}
    assert tulu2["tydiqa_goldp_1shot"]["truncate"] == {"field": "context", "max_tokens": 512}
    assert tulu2["mmlu_0shot"]["select"]["method"] == "first"
    assert tulu2["mmlu_5shot"]["fit_prompt"] == {"max_tokens": 2048}  # [OI] mmlu/run_eval.py


# ------------------------------------------------------------------------------------------- through lm-eval


def asked(lm: ScriptedLM, pattern: str) -> list[str]:
    return [re.search(pattern, p, re.S).group(1) for p in lm.prompts]


def test_gsm8k_runs_on_open_instructs_200_questions(manager, tulu2, tmp_path):
    rows = [{"question": f"Question number {i} about apples?", "answer": f"steps\n#### {i}"} for i in range(321)]
    data = jsonl(tmp_path / "gsm.jsonl", rows)
    lm = ScriptedLM(chat=plain_chat, default="So the answer is 7.")
    entry, _ = harness.run_lm_eval_task(lm, tulu2["gsm8k_cot_8shot"], data, seed=1234)
    random.seed(42)
    expected = [r["question"] for r in oi_sample(rows, 200)]
    got = asked(lm, r"Question: (Question number \d+ about apples\?)<assistant>")
    assert sorted(got) == sorted(expected) and len(got) == 200 == entry["n"]
    assert got != [r["question"] for r in rows[:200]]
    # the one item whose answer is 7 is scored right only if it was drawn
    assert entry["value"] == pytest.approx(100 * (rows[7]["question"] in expected) / 200)
    assert entry["selection"]["method"] == "open-instruct" and entry["selection"]["seed"] == 42
    assert len(entry["selection"]["items_sha256"]) == 64


def test_bbh_draws_40_per_task_with_one_generator_across_tasks(manager, tulu2, tmp_path):
    sizes = {
        "bbh_cot_fewshot_boolean_expressions": 55,
        "bbh_cot_fewshot_causal_judgement": 47,
        "bbh_cot_fewshot_web_of_lies": 30,
    }
    rows = {m: [{"input": f"{m[16:]} item {i}", "target": "True"} for i in range(n)] for m, n in sizes.items()}
    files = {m: {"test": jsonl(tmp_path / f"{m}.jsonl", r)} for m, r in rows.items()}
    lm = ScriptedLM(chat=plain_chat, default="So the answer is True.")
    entry, _ = harness.run_lm_eval_task(lm, tulu2["bbh_cot_3shot"], files, seed=1)
    random.seed(42)
    expected = [r["input"] for m in sorted(rows) for r in oi_sample(rows[m], 40)]  # [OI]: tasks in turn
    got = asked(lm, r"\n\nQ: ([a-z_]+ item \d+)<assistant>")
    assert sorted(got) == sorted(expected) and entry["n"] == 40 + 40 + 30
    assert {m: s["n"] for m, s in entry["subtasks"].items()} == {m: min(n, 40) for m, n in sizes.items()}
    # one generator: the second task's draw differs from what a fresh seed would give it
    random.seed(42)
    alone = [r["input"] for r in oi_sample(rows["bbh_cot_fewshot_causal_judgement"], 40)]
    assert sorted(alone) != sorted(e for e in expected if e.startswith("causal"))


def test_tydiqa_items_exemplars_and_512_token_passages_are_open_instructs(
    manager, tulu2, tmp_path, make_tiny_tokenizer
):
    tokenizer = make_tiny_tokenizer(add_bos=True)
    words = "the model answer question data train token loss mask prompt reply system user".split()

    def rows(lang, n, split):
        return [
            {
                "id": f"{lang}-{split}-{i}",
                "title": "t",
                "question": f"{lang} {split} question {i}?",
                "context": f"{lang} {split} passage {i}: "
                + " ".join(words[(i + k) % len(words)] for k in range(40 + i % 700)),
                "answers": {"text": [f"ans {i}"], "answer_start": [0]},
            }
            for i in range(n)
        ]

    dev = {"english": rows("english", 130, "dev"), "finnish": rows("finnish", 104, "dev")}
    train = {"english": rows("english", 9, "train"), "finnish": rows("finnish", 6, "train")}
    code = {"english": "tydiqa_goldp_en", "finnish": "tydiqa_goldp_fi"}
    files = {
        code[lang]: {
            "validation": jsonl(tmp_path / f"{lang}.dev.jsonl", dev[lang]),
            "train": jsonl(tmp_path / f"{lang}.train.jsonl", train[lang]),
        }
        for lang in dev
    }
    task = {**tulu2["tydiqa_goldp_1shot"], "truncate": {"field": "context", "max_tokens": 64}}
    lm = ScriptedLM(chat=plain_chat, default="ans 3")
    lm.tokenizer = tokenizer
    entry, _ = harness.run_lm_eval_task(lm, task, files, seed=5)

    # [OI], independently: seed, 100 per language in sorted order, then 1 exemplar per language, then the cut
    random.seed(42)
    picked = {lang: oi_sample(dev[lang], 100) for lang in sorted(dev)}
    shots = {lang: random.sample(train[lang], 1)[0] for lang in sorted(dev)}

    def cut(text):
        ids = tokenizer.encode(text)
        return tokenizer.decode(ids[:64]) if len(ids) > 64 else text

    assert entry["n"] == 200
    prompts = {re.search(r": ([a-z]+ dev question \d+\?)\n<assistant>", p).group(1): p for p in lm.prompts}
    labels = {"english": ("Passage:", "Question:", "Answer:"), "finnish": ("Kappale:", "Kysymys:", "Vastaus:")}
    expected = {r["question"]: (lang, r) for lang in picked for r in picked[lang]}
    assert sorted(prompts) == sorted(expected)
    long_ones = 0
    for question, (lang, row) in expected.items():
        shot, (p, q, a) = shots[lang], labels[lang]
        assert (
            f"{p} {cut(shot['context'])}\n{q} {shot['question']}\n{a} {shot['answers']['text'][0]}"
            f"\n\n{p} {cut(row['context'])}\n{q} {question}\n<assistant>{a}"
        ) in prompts[question]
        long_ones += cut(row["context"]) != row["context"]
    assert long_ones > 50  # the cut did happen on most passages
    assert entry["selection"]["truncate"]["max_tokens"] == 64
    assert entry["selection"]["exemplars"] == {code[lang]: [train[lang].index(shots[lang])] for lang in shots}


class RecordingLM(ScriptedLM):
    """ScriptedLM that also records the contexts of its loglikelihood requests (MMLU is multiple choice)."""

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        self.prompts += [r.args[0] for r in requests]
        return super().loglikelihood(requests, disable_tqdm)


def test_mmlu_5shot_drops_exemplars_while_a_prompt_exceeds_2048_tokens(
    tulu2, tmp_path, make_tiny_tokenizer, monkeypatch
):
    """Tulu 2's MMLU 5-shot through lm-eval on a generated subject whose third exemplar is long (~3,000 tokens): every
    prompt keeps the first two exemplars, as [OI] builds it; a test question that is itself too long keeps none and
    is still asked. Without fit_prompt (plain lm-eval) every prompt has all five."""
    monkeypatch.setattr(harness, "task_manager", lambda: tasks_index("mmlu/default"))
    tokenizer = make_tiny_tokenizer(add_bos=True)
    words = "the model answer question data train token loss mask prompt reply system user".split()

    def row(question):
        return {"question": question, "subject": "abstract_algebra", "choices": ["w", "x", "y", "z"], "answer": 0}

    dev = [
        row(f"Exemplar {i}?" if i != 2 else "Exemplar 2? " + " ".join(words[k % 13] for k in range(3000)))
        for i in range(5)
    ]
    test = [row(f"Test question {i}?") for i in range(6)]
    test.append(row("Test question 6? " + " ".join(words[k % 13] for k in range(2500))))
    files = {
        "mmlu_abstract_algebra": {
            "test": jsonl(tmp_path / "test.jsonl", test),
            "dev": jsonl(tmp_path / "dev.jsonl", dev),
        }
    }

    def contexts(task):
        lm = RecordingLM(chat=plain_chat)
        lm.tokenizer = tokenizer
        entry, _ = harness.run_lm_eval_task(lm, task, files, seed=1)
        by_item = {re.search(r"Test question (\d)\?", p).group(1): p for p in lm.prompts}
        return entry, by_item

    entry, prompts = contexts(tulu2["mmlu_5shot"])
    assert entry["n"] == 7 and len(prompts) == 7
    for i in "012345":
        kept = [j for j in range(5) if f"Exemplar {j}?" in prompts[i]]
        assert kept == [0, 1], (i, kept)
        assert len(tokenizer(prompts[i], add_special_tokens=False)["input_ids"]) <= 2048
    assert "Exemplar" not in prompts["6"]
    assert entry["selection"]["fit_prompt"] == {
        "max_tokens": 2048,
        "shots": {"2": 6, "0": 1},
        "tokenizer": tokenizer.name_or_path or type(tokenizer).__name__,
    }
    plain = {k: v for k, v in tulu2["mmlu_5shot"].items() if k != "fit_prompt"}
    _, unfitted = contexts(plain)
    assert all(f"Exemplar {j}?" in unfitted[i] for i in "0123456" for j in range(5))


def test_selection_errors_name_the_task(manager, tulu2, tmp_path):
    data = jsonl(tmp_path / "g.jsonl", [{"question": "q?", "answer": "#### 1"}] * 3)
    task = {**tulu2["gsm8k_cot_8shot"], "truncate": {"field": "passage", "max_tokens": 5}}
    lm = ScriptedLM(chat=plain_chat)
    lm.tokenizer = object()
    with pytest.raises(MenagerieError, match="truncate.field 'passage' is not a field of lm-eval task"):
        harness.run_lm_eval_task(lm, task, data, seed=1)
    with pytest.raises(MenagerieError, match="truncate needs the evaluated model's tokenizer"):
        harness.run_lm_eval_task(ScriptedLM(chat=plain_chat), task, data, seed=1)
    with pytest.raises(MenagerieError, match="takes an integer `limit`"):
        harness.run_lm_eval_task(lm, {**tulu2["gsm8k_cot_8shot"], "limit": {"tulu2_gsm8k_cot": 2}}, data, seed=1)


# ------------------------------------------------------------------------------------------- real data (opt-in)


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "gsm8k_test.jsonl").is_file(), reason=f"{SHARED}/gsm8k_test.jsonl is absent")
def test_real_gsm8k_test_file_gives_open_instructs_200_questions(manager, tulu2):
    """openai/grade-school-math test.jsonl (the file [OI] reads as data/gsm/test.jsonl): [OI]'s main() verbatim in
    its selection steps, against the questions our run asks."""
    path = SHARED / "gsm8k_test.jsonl"
    random.seed(42)
    test_data = []
    with path.open() as fin:
        for line in fin:
            example = json.loads(line)
            test_data.append({"question": example["question"], "answer": example["answer"].split("####")[1].strip()})
    test_data = random.sample(test_data, 200)
    lm = ScriptedLM(chat=plain_chat)
    entry, _ = harness.run_lm_eval_task(lm, tulu2["gsm8k_cot_8shot"], path, seed=1234)
    got = [p.rsplit("\n\nQuestion: ", 1)[1].removesuffix("<assistant>Answer:") for p in lm.prompts]
    assert entry["n"] == 200 and sorted(got) == sorted(e["question"].strip() for e in test_data)
