"""The eval suites: every task resolves, the tulu2 tasks render open-instruct's prompts character for character,
the answer extraction rules, the unweighted MMLU aggregation, and what each eval.json entry records.

No model is loaded: prompts come from lm-eval's own task objects built on small local files, and the runs use
tests/lm_eval_stubs.ScriptedLM (a fixed-rule stand-in, not a model) so lm-eval's aggregation runs on outcomes known
in advance. Expected prompts are written out from open-instruct's code ([OI] eval/<task>/run_eval.py, chat format
eval/templates.py create_prompt_with_tulu_chat_format: "<|user|>\\n" + content + "\\n" + "<|assistant|>\\n").
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from menagerie import formats
from menagerie.config import ConfigError, load_config, validate_config
from menagerie.errors import MenagerieError
from menagerie.evaluate import harness

sys.path.insert(0, str(Path(__file__).parent))
from lm_eval_stubs import ScriptedLM, tasks_index  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tasks"))
import menagerie_utils  # noqa: E402


@pytest.fixture(scope="module")
def index():
    return tasks_index()


@pytest.fixture
def manager(index, monkeypatch):
    monkeypatch.setattr(harness, "task_manager", lambda: index)
    return index


@pytest.fixture(scope="module")
def config():
    return load_config(ROOT / "config.yaml")


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tulu_chat(messages, add_generation_prompt=True):
    """The recipe's tulu template through a real HF tokenizer, with the suites' single-user-turn folding."""
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
        eos_token="</s>",
        unk_token="<unk>",
    )
    tokenizer.chat_template = formats.chat_template_jinja("tulu")
    return tokenizer.apply_chat_template(
        harness.fold_system_into_user(messages),
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
        continue_final_message=not add_generation_prompt,
    )


def rendered(manager, spec, member: str, shots: int, limit: int = 1) -> list[tuple]:
    """(context, continuation or generation settings) of the first requests, as lm-eval builds them."""
    task = manager.load([harness.build(spec)])["tasks"][member]
    task.set_config("num_fewshot", shots)
    task.set_fewshot_seed(1234)
    task.build_all_requests(limit=limit, apply_chat_template=True, fewshot_as_multiturn=False, chat_template=tulu_chat)
    return [inst.args for inst in task.instances]


# ------------------------------------------------------------------------------------------- suites resolve


def test_every_suite_task_resolves_to_an_lm_eval_task_or_group(config, manager):
    names = {t["lm_eval_task"] for tasks in config["suites"].values() for t in tasks if t["harness"] == "lm-eval"}
    missing = sorted(n for n in names if n not in manager.task_index)
    assert not missing, f"suite tasks name lm-eval tasks that neither lm-eval nor tasks/ defines: {missing}"
    kinds = {n: manager.task_index[n].kind.name for n in names}
    assert kinds["openllm_v1_mmlu"] == kinds["tulu2_mmlu"] == kinds["leaderboard_bbh"] == "GROUP"
    assert kinds["tulu2_gsm8k_cot"] == "TASK"


def test_suites_follow_the_published_settings(config):
    """recipes.md's evaluation settings, as config values (the source of each is beside it in config.yaml)."""
    tulu2 = {t["name"]: t for t in config["suites"]["tulu2"]}
    assert (tulu2["mmlu_0shot"]["num_fewshot"], tulu2["mmlu_5shot"]["num_fewshot"]) == (0, 5)
    assert (tulu2["gsm8k_cot_8shot"]["num_fewshot"], tulu2["gsm8k_cot_8shot"]["limit"]) == (8, 200)
    assert (tulu2["bbh_cot_3shot"]["num_fewshot"], tulu2["bbh_cot_3shot"]["limit"]) == (3, 40)
    assert (tulu2["tydiqa_goldp_1shot"]["num_fewshot"], tulu2["tydiqa_goldp_1shot"]["limit"]) == (1, 100)
    assert {
        n: (tulu2[n]["temperature"], tulu2[n]["num_samples"], tulu2[n]["metric"], tulu2[n]["chat_format"])
        for n in ("codex_humaneval_pass1", "codex_humaneval_pass10")
    } == {"codex_humaneval_pass1": (0.1, 20, "pass@1", False), "codex_humaneval_pass10": (0.8, 20, "pass@10", False)}
    assert all(t["chat_format"] for n, t in tulu2.items() if not n.startswith("codex"))
    assert {tulu2[n]["judge"] for n in ("alpaca_eval", "toxigen", "truthfulqa_info_true")} == {
        "alpaca-eval",
        "toxigen-roberta",
        "truthfulqa-truth",
    }
    v1 = {t["name"]: (t["lm_eval_task"], t["num_fewshot"], t["metric"]) for t in config["suites"]["openllm-v1"]}
    assert v1 == {
        "arc_challenge_25shot": ("openllm_v1_arc_challenge", 25, "acc_norm"),
        "hellaswag_10shot": ("hellaswag", 10, "acc_norm"),
        "mmlu_5shot": ("openllm_v1_mmlu", 5, "acc"),
        "truthfulqa_mc2_0shot": ("truthfulqa_mc2", 0, "acc"),
        "winogrande_5shot": ("winogrande", 5, "acc"),
        "gsm8k_5shot": ("gsm8k", 5, "exact_match"),
    }
    assert not any(t["chat_format"] for s in ("openllm-v1", "openllm-v2") for t in config["suites"][s])
    v2 = [t["normalize"] for t in config["suites"]["openllm-v2"]]
    assert sorted(v2) == ["bbh", "gpqa", "ifeval", "math_hard", "mmlu_pro", "musr"]
    helm = {t["name"]: t for t in config["suites"]["efficiency-challenge"]}
    assert helm["mmlu_em"]["limit"]["mmlu_abstract_algebra"] == 5 and len(helm["mmlu_em"]["limit"]) == 55
    assert (helm["gsm8k_em"]["limit"], helm["truthfulqa_em"]["limit"], helm["bbq_em"]["limit"]) == (19, 9, 18)
    assert all(t["scale"] == 1 for t in helm.values())


# ------------------------------------------------------------------------------------------- open-instruct prompts


def test_tulu2_mmlu_prompt_is_open_instructs(manager, tmp_path):
    test = jsonl(
        tmp_path / "t.jsonl",
        [{"question": "What is 2+2?", "subject": "abstract_algebra", "choices": ["1", "2", "3", "4"], "answer": 3}],
    )
    dev = jsonl(
        tmp_path / "d.jsonl",
        [
            {"question": f"Q{i}?", "subject": "abstract_algebra", "choices": ["a", "b", "c", "d"], "answer": i % 4}
            for i in range(5)
        ],
    )
    spec = harness.task_spec(
        {"name": "mmlu", "lm_eval_task": "tulu2_mmlu"}, {"mmlu_abstract_algebra": {"test": test, "dev": dev}}
    )
    zero = rendered(manager, spec, "mmlu_abstract_algebra", 0)
    # [OI] gen_prompt + format_example; format_subject gives " abstract algebra" (hence two spaces after "about")
    header = "The following are multiple choice questions (with answers) about  abstract algebra.\n\n"
    question = "What is 2+2?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"
    assert [a[1] for a in zero] == [" A", " B", " C", " D"]
    assert zero[0][0] == f"<|user|>\n{header}{question}\n<|assistant|>\nThe answer is:"
    two = rendered(manager, spec, "mmlu_abstract_algebra", 2)
    exemplars = "Q0?\nA. a\nB. b\nC. c\nD. d\nAnswer: A\n\nQ1?\nA. a\nB. b\nC. c\nD. d\nAnswer: B\n\n"
    assert two[0][0] == f"<|user|>\n{header}{exemplars}{question}\n<|assistant|>\nThe answer is:"


def test_tulu2_gsm8k_prompt_target_and_generation_are_open_instructs(manager, tmp_path):
    data = jsonl(tmp_path / "g.jsonl", [{"question": " Janet has 3 apples. ", "answer": "3 x 1 = 3\n#### 1,003"}])
    spec = harness.task_spec({"name": "gsm", "lm_eval_task": "tulu2_gsm8k_cot"}, data)
    context, gen = rendered(manager, spec, "tulu2_gsm8k_cot", 8)[0]
    first = (
        "Question: There are 15 trees in the grove. Grove workers will plant trees in the grove today. After "
        "they are done, there will be 21 trees. How many trees did the grove workers plant today?\nAnswer: There "
        "are 15 trees originally. Then there were 21 trees after some more were planted. So there must have "
        "been 21 - 15 = 6. So the answer is 6."
    )
    last = (
        "Question: Olivia has $23. She bought five bagels for $3 each. How much money does she have left?\n"
        "Answer: Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - "
        "15 dollars left. 23 - 15 is 8. So the answer is 8."
    )
    assert context.startswith(f"<|user|>\nAnswer the following questions.\n\n{first}\n\n")
    assert context.endswith(f"{last}\n\nQuestion: Janet has 3 apples.\n<|assistant|>\nAnswer:")
    assert context.count("\nAnswer: ") == 8 and context.count("Question: ") == 9
    assert gen == {"until": [], "max_gen_toks": 512, "do_sample": False, "temperature": 0.0}
    task = manager.load([harness.build(spec)])["tasks"]["tulu2_gsm8k_cot"]
    assert task.doc_to_target(next(iter(task.eval_docs))) == "1003"


def test_tulu2_bbh_prompt_is_open_instructs(manager, tmp_path):
    data = jsonl(tmp_path / "b.jsonl", [{"input": "not ( True ) and ( True ) is", "target": "False"}])
    spec = harness.task_spec(
        {"name": "bbh", "lm_eval_task": "tulu2_bbh_cot"}, {"bbh_cot_fewshot_boolean_expressions": {"test": data}}
    )
    context, gen = rendered(manager, spec, "bbh_cot_fewshot_boolean_expressions", 3)[0]
    # [OI]: task_prompt.strip() + "\n\nQ: " + input, then "A:" after the assistant header; the cot-prompts file is
    # the description, then "Q: ...\nA: Let's think step by step.\n<reasoning> So the answer is X." x3
    assert context.startswith(
        "<|user|>\nEvaluate the result of a random Boolean expression.\n\n"
        "Q: not ( ( not not True ) ) is\nA: Let's think step by step.\nRemember that"
    )
    assert context.count("A: Let's think step by step.\n") == 3
    assert context.endswith("So the answer is True.\n\nQ: not ( True ) and ( True ) is\n<|assistant|>\nA:")
    assert gen["until"] == [] and gen["max_gen_toks"] == 512
    task = manager.load([harness.build(spec)])["tasks"]["bbh_cot_fewshot_boolean_expressions"]
    assert task.doc_to_target(next(iter(task.eval_docs))) == "False"  # the gold answer is untouched


def test_tulu2_tydiqa_prompt_is_open_instructs(manager, tmp_path):
    row = {"title": "t", "answers": {"text": ["Paris"], "answer_start": [0]}}
    test = jsonl(
        tmp_path / "v.jsonl",
        [{**row, "id": "english-1", "context": "Paris is in France.", "question": "Where is Paris?"}],
    )
    train = jsonl(
        tmp_path / "tr.jsonl",
        [
            {
                **row,
                "id": "english-2",
                "context": "Rome is in Italy.",
                "question": "Where is Rome?",
                "answers": {"text": ["Italy"], "answer_start": [11]},
            }
        ],
    )
    spec = harness.task_spec(
        {"name": "ty", "lm_eval_task": "tulu2_tydiqa"}, {"tydiqa_goldp_en": {"validation": test, "train": train}}
    )
    context, gen = rendered(manager, spec, "tydiqa_goldp_en", 1)[0]
    assert context == (
        "<|user|>\nAnswer the following question based on the information in the given passage.\n\n"
        "Passage: Rome is in Italy.\nQuestion: Where is Rome?\nAnswer: Italy\n\n"
        "Passage: Paris is in France.\nQuestion: Where is Paris?\n\n<|assistant|>\nAnswer:"
    )
    assert gen["max_gen_toks"] == 50 and gen["until"] == []


def test_single_user_turn_folds_the_description_and_restores_the_model():
    messages = [
        {"role": "system", "content": "Header.\n\n"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A:"},
    ]
    assert harness.fold_system_into_user(messages) == [
        {"role": "user", "content": "Header.\n\nQ"},
        {"role": "assistant", "content": "A:"},
    ]
    assert harness.fold_system_into_user([{"role": "system", "content": "H"}, {"role": "user", "content": "Q"}]) == [
        {"role": "user", "content": "H\n\nQ"}
    ]
    lm = ScriptedLM(chat=lambda msgs, add: "|".join(m["role"] for m in msgs))
    with harness.single_user_turn(lm):
        assert lm.apply_chat_template(messages) == "user|assistant"
    assert lm.apply_chat_template(messages) == "system|user|assistant"
    assert "apply_chat_template" not in vars(lm)


# ------------------------------------------------------------------------------------------- answer extraction


def test_open_instruct_gsm8k_extraction():
    outputs = [["So 1,234 + 1 = 1,235. So the answer is 1,235."], ["It is -2.5 or 7"], ["no number here"], ["1,2,3"]]
    # [OI]: re.sub(r"(\d),(\d)", r"\1\2") then the last of re.findall(r"[-+]?\d*\.\d+|\d+"); else the output
    assert menagerie_utils.oi_gsm8k_extract(outputs, None) == [["1235"], ["7"], ["no number here"], ["3"]]


def test_open_instruct_bbh_extraction():
    outputs = [
        ["Let's see. So the answer is (B). Then more."],
        ["So the answer is False."],
        ["  The answer\n\nmore text"],
    ]
    assert menagerie_utils.oi_bbh_extract(outputs, None) == [["(B)"], ["False"], ["The answer"]]


def test_squad_f1_and_tydiqa_results_by_hand():
    # "the capital Paris" vs "Paris": normalised tokens [capital, paris] vs [paris]: P 1/2, R 1, F1 2/3
    assert menagerie_utils.squad_f1("the capital Paris", "Paris") == pytest.approx(2 / 3)
    scores = menagerie_utils.oi_tydiqa_results({"answers": ["Paris", "the capital Paris"]}, [" Paris.\n"])
    assert scores == {"f1": 100.0, "exact_match": 100.0}
    assert menagerie_utils.oi_tydiqa_results({"answers": ["Rome"]}, ["Paris"]) == {"f1": 0.0, "exact_match": 0.0}


def test_helm_rules_by_hand():
    from datasets import Dataset

    rows = menagerie_utils.helm_gsm8k_rows(Dataset.from_list([{"question": "q", "answer": "1+1=2\n#### 72"}]))
    assert rows[0]["helm_answer"] == "1+1=2 The answer is 72." and rows[0]["helm_gold"] == "72."
    assert menagerie_utils.helm_last_token([["so The answer is 72.", "72"]], None) == [["72.", "72"]]
    # HELM truthful_qa mc_single: incorrect answers then the best, "." appended, rotated by ord(best[0]) % n;
    # 5 questions -> int(5 * 0.2) = 1 in the in-context pool, 4 evaluated
    data = Dataset.from_list(
        [{"question": f" Q{i} ", "best_answer": "Yes", "incorrect_answers": ["No", "Maybe."]} for i in range(5)]
    )
    valid = menagerie_utils.helm_truthfulqa_eval(data)
    assert len(valid) == 4 and len(menagerie_utils.helm_truthfulqa_train(data)) == 1
    # options [No., Maybe., Yes.], k = ord("Y") % 3 = 89 % 3 = 2 -> [Yes., No., Maybe.]
    assert valid[0]["options"] == ["Yes.", "No.", "Maybe."] and valid[0]["gold"] == 0
    assert valid[0]["question"] == "Q1"


def test_layouts_of_local_copies():
    from datasets import Dataset

    csv_rows = Dataset.from_list(
        [{"question": "q", "choice0": "a", "choice1": "b", "choice2": "c", "choice3": "d", "answer": 2}]
    )
    assert menagerie_utils.mmlu_rows(csv_rows)[0] == {"question": "q", "choices": ["a", "b", "c", "d"], "answer": 2}
    arc = Dataset.from_list(
        [
            {
                "id": "x",
                "answerKey": "B",
                "question": {"stem": "s", "choices": [{"text": "t1", "label": "A"}, {"text": "t2", "label": "B"}]},
            }
        ]
    )
    assert menagerie_utils.arc_rows(arc)[0] == {
        "id": "x",
        "question": "s",
        "answerKey": "B",
        "choices": {"text": ["t1", "t2"], "label": ["A", "B"]},
    }


# ------------------------------------------------------------------------------------------- aggregation + records


@pytest.fixture
def two_subjects(tmp_path) -> dict:
    """abstract_algebra: 2 questions (answers A, B); college_physics: 4 (A, A, A, B); hendrycks CSV layout."""

    def write(name, answers):
        path = tmp_path / f"{name}_test.csv"
        with path.open("w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["question", "choice0", "choice1", "choice2", "choice3", "answer"])
            out.writerows([[f"{name} q{i}", "w", "x", "y", "z", a] for i, a in enumerate(answers)])
        return path

    return {
        "mmlu_abstract_algebra": {"test": write("abstract_algebra", [0, 1])},
        "mmlu_college_physics": {"test": write("college_physics", [0, 0, 0, 1])},
    }


def mmlu_task(**extra) -> dict:
    return {
        "name": "mmlu_5shot",
        "harness": "lm-eval",
        "lm_eval_task": "openllm_v1_mmlu",
        "num_fewshot": 0,
        "metric": "acc",
        "chat_format": False,
        "limit": None,
        "scale": 100,
        **extra,
    }


def test_openllm_v1_mmlu_is_the_unweighted_mean_of_subjects(manager, two_subjects):
    """A model answering "A" everywhere scores 1/2 and 3/4 on subjects of 2 and 4 questions: the unweighted mean is
    (0.5 + 0.75) / 2 = 0.625; weighting by size (lm-eval's mmlu group) would give (1 + 3) / 6 = 0.6667."""
    entry, native = harness.run_lm_eval_task(ScriptedLM(prefer=" A"), mmlu_task(), two_subjects, seed=7)
    assert entry["status"] == "ok" and entry["lm_eval_task"] == "openllm_v1_mmlu"
    assert entry["value"] == pytest.approx(62.5)
    assert entry["subtasks"] == {
        "mmlu_abstract_algebra": {"value": pytest.approx(50.0), "n": 2},
        "mmlu_college_physics": {"value": pytest.approx(75.0), "n": 4},
    }
    assert entry["n"] == 6
    # the stderr of an unweighted mean of k subject means: sqrt(sum se_i^2) / k (lm-eval's unweighted_mean_stderr)
    se = [native["results"][s]["acc_stderr,none"] for s in ("mmlu_abstract_algebra", "mmlu_college_physics")]
    assert entry["stderr"] == pytest.approx(100 * (se[0] ** 2 + se[1] ** 2) ** 0.5 / 2)
    # what every entry records: few-shot seed, settings, limit and hashes
    assert entry["fewshot_seed"] == 7 and entry["num_fewshot"] == 0 and entry["limit"] is None
    assert entry["apply_chat_template"] is False and entry["fewshot_as_multiturn"] is False
    assert len(entry["task_sha256"]) == len(entry["configs_sha256"]) == 64
    assert entry["lm_eval_version"] == "0.4.13"


def test_tulu2_mmlu_weights_by_question_like_open_instruct(manager, two_subjects):
    """The same answers through Tulu 2's MMLU group: [OI]'s average_acc is the mean over all questions (4/6).
    (Its header names the subject, so the rows carry cais/mmlu's `subject` field.)"""
    files = {}
    for member, split in two_subjects.items():
        with split["test"].open() as handle:
            rows = [
                {
                    "question": r["question"],
                    "subject": member.removeprefix("mmlu_"),
                    "answer": int(r["answer"]),
                    "choices": [r[f"choice{i}"] for i in range(4)],
                }
                for r in csv.DictReader(handle)
            ]
        files[member] = {"test": jsonl(split["test"].with_suffix(".jsonl"), rows)}
    entry, _ = harness.run_lm_eval_task(ScriptedLM(prefer=" A"), mmlu_task(lm_eval_task="tulu2_mmlu"), files, seed=7)
    assert entry["value"] == pytest.approx(100 * 4 / 6)


def test_limit_per_member_runs_only_those_members_and_items(manager, two_subjects):
    task = mmlu_task(limit={"mmlu_college_physics": 3})
    entry, native = harness.run_lm_eval_task(
        ScriptedLM(prefer=" A"), task, {"mmlu_college_physics": two_subjects["mmlu_college_physics"]}, 1
    )
    assert entry["n"] == 3 and entry["value"] == pytest.approx(100.0)  # the first 3 answers are all A
    assert set(entry["subtasks"]) == {"mmlu_college_physics"} and entry["limit"] == {"mmlu_college_physics": 3}
    with pytest.raises(
        MenagerieError,
        match=r"suite task 'mmlu_5shot': key 'limit' names members without data "
        r"files: mmlu_anatomy",
    ):
        harness.task_spec({**task, "limit": {"mmlu_anatomy": 2}}, {"mmlu_college_physics": {"test": "x.csv"}})


def test_unknown_task_and_wrong_member_are_named(manager):
    with pytest.raises(
        MenagerieError,
        match=r"lm-eval task 'mmlu_typo' is neither an lm-eval 0.4.13 task nor "
        r"defined in .*/tasks",
    ):
        harness.task_spec({"name": "t", "lm_eval_task": "mmlu_typo"})
    with pytest.raises(MenagerieError, match=r"'arc_easy' is not a member of lm-eval group 'openllm_v1_mmlu'"):
        harness.task_spec(mmlu_task(), {"arc_easy": {"test": Path("x.csv")}})


def test_judge_name_typo_is_a_config_error(config):
    import copy

    import yaml

    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    broken = copy.deepcopy(raw)
    broken["suites"]["tulu2"][-1]["info_judge"] = "truthfulqa-inf"
    with pytest.raises(ConfigError) as info:
        validate_config(broken)
    assert "suite 'tulu2'" in str(info.value) and "unknown judge 'truthfulqa-inf'" in str(info.value)
    bad_limit = copy.deepcopy(raw)
    bad_limit["suites"]["efficiency-challenge"][0]["limit"]["mmlu_anatomy"] = 0
    with pytest.raises(ConfigError, match=r"suite 'efficiency-challenge'.*key '0.limit"):
        validate_config(bad_limit)


def test_per_member_limits_restrict_the_group_to_those_members(config, manager):
    """The efficiency-challenge MMLU: HELM's 55 subjects with their instance counts; each member keeps the group's
    HELM settings (its non-group keys) and nothing else of lm-eval's mmlu group is run."""
    task = next(t for t in config["suites"]["efficiency-challenge"] if t["name"] == "mmlu_em")
    spec = harness.task_spec(task)
    assert spec["group"] == "helm_mmlu" and len(spec["task"]) == 55
    members = {m["task"]: m for m in spec["task"]}
    assert set(members) == set(task["limit"])
    assert "mmlu_conceptual_physics" not in members and "mmlu_elementary_mathematics" not in members
    anatomy = members["mmlu_anatomy"]
    assert anatomy["output_type"] == "generate_until" and anatomy["dataset_name"] == "anatomy"
    assert anatomy["generation_kwargs"] == {"until": ["\n"], "max_gen_toks": 5, "do_sample": False, "temperature": 0.0}
    assert anatomy["process_docs"] is menagerie_utils.mmlu_rows or anatomy["process_docs"].__name__ == "mmlu_rows"
    assert harness.limit_args(task) == (None, {m: list(range(n)) for m, n in task["limit"].items()})
    assert harness.limit_args({"limit": 40}) == (40, None)


def test_hub_task_without_hub_access_is_skipped_with_the_reason(config, manager, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    task = next(t for t in config["suites"]["tulu2"] if t["name"] == "gsm8k_cot_8shot")
    entry, native = harness.run_lm_eval_task(ScriptedLM(), task, None, seed=3)
    assert entry["status"] == "skipped" and native == {}
    assert entry["reason"].startswith("lm-eval task 'tulu2_gsm8k_cot' could not run here: ")
    assert (entry["limit"], entry["num_fewshot"], entry["fewshot_seed"]) == (200, 8, 3)
    assert "value" not in entry


def test_tiny_suite_task_reads_its_materialised_file(config, manager, tmp_path):
    """The embedded default's heldout_exact: the repo YAML pointed at the dataset file, max_new_tokens applied,
    the last number of the output against the answer."""
    data = jsonl(
        tmp_path / "tiny-eval.jsonl",
        [
            {"id": "a", "question": "What is 2 + 3?", "answer": "5"},
            {"id": "b", "question": "What is 7 + 1?", "answer": "8"},
            {"id": "c", "question": "What is 4 + 4?", "answer": "8"},
        ],
    )
    task = next(t for t in config["suites"]["tiny"] if t["name"] == "heldout_exact")
    spec = harness.task_spec(task, data)
    assert spec["dataset_kwargs"] == {"data_files": {"test": str(data)}} and spec["dataset_path"] == "json"
    assert spec["generation_kwargs"]["max_gen_toks"] == 48
    lm = ScriptedLM(
        generations={"2 + 3": "It is 5.", "7 + 1": "7 + 1 = 9", "4 + 4": "8"},
        chat=lambda msgs, add: msgs[-1]["content"],
    )
    entry, _ = harness.run_lm_eval_task(lm, task, data, seed=0)
    assert entry["value"] == pytest.approx(100 * 2 / 3) and entry["n"] == 3 and entry["filter"] == "last_number"


def _failing_build(exc):
    def build(spec):
        raise exc

    return build


@pytest.mark.parametrize(
    "make_error",
    [
        lambda torch: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        lambda torch: RuntimeError("CUDA error: an illegal memory access was encountered"),
        lambda torch: RuntimeError("NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled cuda error"),
    ],
    ids=["oom", "cuda", "nccl"],
)
def test_device_errors_fail_the_task_never_skip_it_with_fake_gpu_error(manager, monkeypatch, make_error):
    """A GPU OOM / CUDA / NCCL failure (injected: no GPU here) must fail the job, not become `status: skipped`."""
    import torch

    error = make_error(torch)
    monkeypatch.setattr(harness, "build", _failing_build(error))
    with pytest.raises(type(error)) as raised:
        harness.run_lm_eval_task(ScriptedLM(prefer=" A"), mmlu_task(), None, seed=7)
    assert raised.value is error


def test_only_unavailable_data_is_skipped_with_the_reason_with_fake_hub(manager, monkeypatch):
    monkeypatch.setattr(
        harness,
        "build",
        _failing_build(ConnectionError("Couldn't reach 'cais/mmlu' on the Hub (OfflineModeIsEnabled)")),
    )
    entry, native = harness.run_lm_eval_task(ScriptedLM(prefer=" A"), mmlu_task(), None, seed=7)
    assert entry["status"] == "skipped" and native == {}
    assert "ConnectionError: Couldn't reach 'cais/mmlu'" in entry["reason"]
    # anything else (a bug, a bad argument) fails the job naming the task
    monkeypatch.setattr(harness, "build", _failing_build(TypeError("unexpected keyword 'foo'")))
    with pytest.raises(MenagerieError, match=r"lm-eval task mmlu_5shot failed: TypeError: unexpected keyword"):
        harness.run_lm_eval_task(ScriptedLM(prefer=" A"), mmlu_task(), None, seed=7)
