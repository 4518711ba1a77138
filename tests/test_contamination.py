"""Contamination gate: n-gram index, guard, planted recall/precision, actions, and the tiny twins' data."""

from __future__ import annotations

import json

import pytest

from contamination_planted import NEAR_MISSES, PARAPHRASES, answer_items, answer_rows, planted
from menagerie.data.contamination.guard import guard_reason, guard_terms, guard_words, passes_guard
from menagerie.data.contamination.ngram import NgramIndex, ngram_matches
from menagerie.data.contamination.text import words
from menagerie.data.contamination.gate import ContaminationError, find_pairs, run_gate

SETTINGS = {
    "methods": ["ngram", "embedding"],
    "ngram": 13,
    "ngram_min_overlap": 0.2,
    "cosine": 0.8,
    "action": "drop",
    "guard": True,
}


@pytest.fixture(autouse=True)
def _private_embedding_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MENAGERIE_EMBEDDING_CACHE", str(tmp_path / "embeddings"))


def test_words_lowercase_and_strip_punctuation():
    assert words("Hello, WORLD!! It's 1,000 <|user|>") == ["hello", "world", "it", "s", "1000", "user"]
    assert words("What is 43 - 35?") != words("What is 43 + 35?")  # operators are content


def test_ngram_long_item_needs_a_13_gram():
    item = "the quick brown fox jumps over the lazy dog while the farmer sleeps in the barn at noon"
    train = [
        "Story: THE quick brown fox -- jumps over the lazy dog, while the farmer sleeps! The end.",
        "the quick brown fox jumps over the lazy dog",  # only 9 words: no 13-gram
        "unrelated text about cooking pasta",
    ]
    found = ngram_matches(train, [item], n=13)
    assert [(m.row, m.item) for m in found] == [(0, 0)]
    assert 0 < found[0].score < 1  # score: fraction of the item's 13-grams present


def test_ngram_short_item_must_appear_whole():
    found = ngram_matches(
        ["<|user|>\nwhat IS 23 plus 58??\n<|assistant|>\n81", "what is 23 plus 59"], ["What is 23 plus 58?"]
    )
    assert [(m.row, m.item, m.score) for m in found] == [(0, 0, 1.0)]


def test_ngram_index_is_hashed_not_pairwise():
    index = NgramIndex([f"item number {i} asks about topic {i * 7} in detail" for i in range(2000)], n=13)
    assert sum(len(keys) for keys, _ in index.tables.values()) == 2000  # 9-word items: one whole-item gram each
    assert index.query(["item number 1999 asks about topic 13993 in detail, please"]) == [(0, 1999, 1.0)]


def test_ngram_shared_by_several_items_counts_for_each():
    """Templated items share long n-grams; a copy of the second one must still score 1.0 for it (an n-gram once
    counted only for the first item holding it, so copies of templated items went unflagged)."""
    template = "Select the best English interpretation of the given proposition, using the following translation key:"
    items = [f"{template} Ax: x is an apple. Bx: x is blue.", f"{template} Cx: x is a cat. Dx: x is dark."]
    found = ngram_matches([f"Intro text. {items[1]} Answer: (A)", f"{items[0]} Answer: (B)"], items, n=13)
    assert [(m.row, m.item, m.score) for m in found] == [(0, 1, 1.0), (1, 0, 1.0)]


def test_guard_numbers_entities_operations_units():
    terms = guard_terms("How many minutes are in 5 hours?")
    assert passes_guard(terms, guard_words("Convert 5 hours to minutes."))
    assert not passes_guard(terms, guard_words("Convert 5 minutes to seconds."))
    assert not passes_guard(guard_terms("What is 43 + 35?"), guard_words("What is 43 - 35?"))
    assert not passes_guard(guard_terms("What is the capital of France?"), guard_words("the capital of Spain"))
    assert not passes_guard(guard_terms("When did World War II end?"), guard_words("When did World War I end?"))


@pytest.mark.parametrize(
    "item, same, other",
    [
        (
            "Pens cost $1.5 each. How much do 4 pens cost?",
            "Pens are $1.5 apiece; what do four pens cost?",
            "Pens are $1.5 apiece; what do five pens cost?",
        ),
        (
            "She earns $20 per hour for 5 hours.",
            "She is paid twenty dollars an hour for five hours.",
            "She is paid twenty dollars an hour for six hours.",
        ),
        (
            "The counter is increased by one, then by 1 and again by 1.",
            "It is incremented by 1 three times: by 1, by one and by 1.",
            "It is incremented by 2, by 2 and by 2.",
        ),
        ("A car drives 45 kilometers per hour for 2 hours.", "In two hrs at 45 km an hour", "In two hrs at 45 mph"),
        (
            "A baker sells 24 muffins at 3 dollars a piece.",
            "two dozen muffins at $3 each",
            "two dozen muffins at $4 each",
        ),
        ("What is twenty-one plus 300?", "Add 21 and three hundred.", "Add 21 and three thousand."),
    ],
)
def test_guard_reads_meaning_not_spelling(item, same, other):
    """Number words are digits, "apiece"/"a piece"/"an hour"/"per"/"each" one rate, unit spellings one unit, "$"
    a dollar; another number or unit is still refused, with a reason naming it."""
    terms = guard_terms(item)
    assert passes_guard(terms, guard_words(same)), guard_reason(terms, guard_words(same))
    assert not passes_guard(terms, guard_words(other))
    assert "missing" in guard_reason(terms, guard_words(other))
    assert guard_reason(terms, guard_words(same)) is None


def test_guard_reason_names_what_is_missing():
    terms = guard_terms("What is 47 plus 38?")
    assert guard_reason(terms, guard_words("What is 48 plus 38?")) == "numbers of the item missing: 47"
    assert guard_reason(terms, guard_words("What is 47 minus 38?")) == "no operation of the item's kind (add)"
    assert "australia" in guard_reason(
        guard_terms("What is the capital city of Australia?"), guard_words("What is the capital city of Austria?")
    )


def _measure(rows, items, settings):
    flagged_entries, reviewed = find_pairs(rows, items, settings)
    flagged: dict[int, set[str]] = {}
    for entry in flagged_entries:
        flagged[entry["row"]] = {m["eval_text"] for m in entry["matches"]}
    stats = {}
    for kind in ("copy", "reformatted", "paraphrase", "near_miss", "clean"):
        index = [i for i, r in enumerate(rows) if r["kind"] == kind]
        hits = [i for i in index if i in flagged]
        right = [i for i in hits if rows[i]["target"] in flagged[i]]
        stats[kind] = (len(index), len(hits), len(right))
    return stats, flagged_entries, reviewed


def test_planted_recall_and_precision(capsys):
    eval_texts, rows = planted()
    assert len(PARAPHRASES) >= 30 and len(NEAR_MISSES) >= 25
    items = [{"task": "planted", "id": str(i), "kind": "question", "text": t} for i, t in enumerate(eval_texts)]
    stats, entries, reviewed = _measure(rows, items, SETTINGS)
    positives = sum(stats[k][0] for k in ("copy", "reformatted", "paraphrase"))
    caught = sum(stats[k][2] for k in ("copy", "reformatted", "paraphrase"))
    flagged = sum(stats[k][1] for k in stats)
    recall, precision = caught / positives, caught / max(flagged, 1)
    with capsys.disabled():
        print(
            f"\n[contamination planted set, cosine {SETTINGS['cosine']}] "
            + ", ".join(f"{k}: {hit}/{n} flagged" for k, (n, hit, _) in stats.items())
            + f" | recall {recall:.3f} (copies+reformatted+paraphrases), precision {precision:.3f}"
            + f" | {len(reviewed)} guard vetoes above a threshold, for review"
        )
    assert stats["copy"][2] == stats["copy"][0] and stats["reformatted"][2] == stats["reformatted"][0]
    assert stats["paraphrase"][2] >= 0.9 * stats["paraphrase"][0]
    assert recall >= 0.95
    assert stats["near_miss"][1] == 0 and stats["clean"][1] == 0
    # every near miss the embedding scored above the threshold is in the reviewed list, with the guard's reason
    misses = {k for k, r in enumerate(rows) if r["kind"] == "near_miss"}
    vetoed = [v for v in reviewed if v["row"] in misses and v["method"] == "embedding"]
    assert len({v["row"] for v in vetoed}) >= len(misses) // 2
    assert all(v["score"] >= v["threshold"] and "missing" in v["reason"] or "operation" in v["reason"] for v in vetoed)
    # the embedding method is what catches paraphrases: n-grams alone miss most of them
    ngram_only, _, _ = _measure(rows, items, {**SETTINGS, "methods": ["ngram"]})
    assert ngram_only["paraphrase"][2] < stats["paraphrase"][2]


def test_answer_leaks_are_caught_and_near_misses_are_not(capsys):
    """Reference answers in assistant turns: GSM8K-style solutions (verbatim, without calculator annotations,
    inside other text), reference answers, HumanEval solutions with renamed variables and another layout."""
    items, rows = answer_items(), answer_rows()
    entries, _ = find_pairs(rows, items, SETTINGS)
    by_row = {e["row"]: e for e in entries}
    leaks = [k for k, r in enumerate(rows) if r["kind"] == "answer_leak"]
    caught = [
        k
        for k in leaks
        if k in by_row
        and any(m["kind"] == "answer" and m["eval_id"] == rows[k]["target"] for m in by_row[k]["matches"])
    ]
    misses = [k for k, r in enumerate(rows) if r["kind"] == "answer_near_miss"]
    with capsys.disabled():
        print(
            f"\n[contamination answer leaks] caught {len(caught)}/{len(leaks)}, near misses flagged "
            f"{sum(k in by_row for k in misses)}/{len(misses)}; not caught: "
            + ", ".join(rows[k]["target"] for k in leaks if k not in caught)
        )
    assert len(caught) >= 0.9 * len(leaks)
    assert not [rows[k]["messages"][1]["content"][:60] for k in misses if k in by_row]
    renamed = next(k for k in leaks if rows[k]["target"] == "HumanEval/0")
    match = next(m for m in by_row[renamed]["matches"] if m["method"] == "code")
    assert match["kind"] == "answer" and match["score"] == 1.0 and match["threshold"] == 0.5
    # the highlighted span is the leaked function body, renamed names and all
    start, end = match["train_spans"][0]
    span = match["train_excerpt"][start:end]
    assert "for i, a in enumerate(nums)" in span and span.endswith("return False") and "```" not in span
    answers = {i["id"] for i in items if i["kind"] == "answer"}
    assert "gsm-1" in answers and "short-1" not in answers and "short-2" not in answers


def _rows(texts):
    return [
        {"id": f"r{i}", "messages": [{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]}
        for i, t in enumerate(texts)
    ]


def test_actions_drop_warn_fail():
    items = [{"task": "t", "id": "e0", "kind": "question", "text": "What is 23 plus 58?"}]
    parts = {"sft": _rows(["what is 23 plus 58", "what is 24 plus 58", "Write a poem."])}
    settings = {**SETTINGS, "methods": ["ngram"]}
    kept, report = run_gate("r", settings, parts, items, ["mmlu_0shot"])
    assert [r["id"] for r in kept["sft"]] == ["r1", "r2"]
    summary = report["summary"]
    assert summary["flagged_rows"] == 1 and summary["unchecked_tasks"] == ["mmlu_0shot"]
    assert summary["parts"]["sft"] == {
        "train_rows": 3,
        "flagged_rows": 1,
        "kept_rows": 2,
        "by_method": {"ngram": 1, "code": 0},
        "by_kind": {"question": 1, "answer": 0},
        "by_task": {"t": 1},
        "reviewed": 0,
    }
    entry = report["flagged"]["sft"][0]
    assert entry["methods"] == ["ngram"] and entry["row"] == 0
    match = entry["matches"][0]
    assert match["eval_text"] == "What is 23 plus 58?" and match["score"] == 1.0 and match["kind"] == "question"
    json.dumps(report)
    kept, _ = run_gate("r", {**settings, "action": "warn"}, parts, items, [])
    assert len(kept["sft"]) == 3
    with pytest.raises(ContaminationError, match=r"recipe 'r': .*sft 1 of 3 \(ngram 1\)"):
        run_gate("r", {**settings, "action": "fail"}, parts, items, [])


def test_report_one_entry_per_row_with_every_method_and_its_spans():
    """A row caught by n-grams and by the embedding is one entry listing both, each with its score, threshold and
    the matched text highlighted (character spans into the excerpt and into the item)."""
    question = "A shop had 96 pencils and sold 82 of them. How many pencils are left?"
    items = [{"task": "t", "id": "e0", "kind": "question", "text": question}]
    rows = _rows([f"Some intro first. {question} Thanks!", "Write a haiku about autumn leaves."])
    found, reviewed = find_pairs(rows, items, SETTINGS)
    assert [e["row"] for e in found] == [0] and reviewed == []
    entry = found[0]
    assert entry["methods"] == ["embedding", "ngram"] and len(entry["matches"]) == 2
    ngram = next(m for m in entry["matches"] if m["method"] == "ngram")
    assert ngram["threshold"] == SETTINGS["ngram_min_overlap"] and ngram["ngrams"] == "3 of 3 13-grams"
    ((start, end),) = ngram["train_spans"]
    assert ngram["train_excerpt"][start:end] == question[:-1]  # the 15 words, up to the last one
    assert ngram["eval_spans"] == [[0, len(question) - 1]]
    embedding = next(m for m in entry["matches"] if m["method"] == "embedding")
    assert embedding["score"] >= embedding["threshold"] == SETTINGS["cosine"]
    marked = [embedding["train_excerpt"][a:b] for a, b in embedding["train_spans"]]
    assert "96 pencils" in " ".join(marked) and "intro" not in " ".join(marked)


def test_ngram_min_overlap_needs_a_share_of_the_item():
    """One shared 13-gram of a 37-word item is 1/25 of it: flagged with no minimum, not at the default 0.2."""
    item = (
        "In a small town there is a bakery that sells bread, cakes and pies every morning; the baker opens "
        "at six and closes when everything is sold, which on busy days happens before noon or even earlier."
    )
    items = [{"task": "t", "id": "e0", "kind": "question", "text": item}]
    one_gram = "My notes: " + " ".join(item.split()[:13]) + " and then something else entirely."
    half = "Copied: " + " ".join(item.split()[:22])
    rows = _rows([one_gram, half])
    settings = {**SETTINGS, "methods": ["ngram"], "guard": False}  # the cut rows lack its "six" and "sold"
    assert [e["row"] for e in find_pairs(rows, items, {**settings, "ngram_min_overlap": 0.0})[0]] == [0, 1]
    flagged = find_pairs(rows, items, settings)[0]
    assert [e["row"] for e in flagged] == [1] and flagged[0]["matches"][0]["ngrams"] == "10 of 25 13-grams"


def test_reviewed_lists_ngram_vetoes_with_the_reason():
    items = [
        {
            "task": "t",
            "id": "e0",
            "kind": "answer",
            "text": "The school orders 14*12 = 168 markers. Without the broken ones there are 168-40 = 128.",
        }
    ]
    rows = _rows(["The school orders 14*12 = 168 markers. Without the broken ones there are 168-41 = 127."])
    found, reviewed = find_pairs(rows, items, {**SETTINGS, "methods": ["ngram"]})
    assert found == [] and len(reviewed) == 1
    assert reviewed[0]["method"] == "ngram" and reviewed[0]["score"] >= reviewed[0]["threshold"]
    assert reviewed[0]["reason"] == "numbers of the item missing: 128, 40"


def test_recipes_get_default_gate():
    from menagerie.config import load_config

    config = load_config("config.yaml")
    for name, recipe in config["recipes"].items():
        gate = dict(recipe["contamination"])
        resources = gate.pop("resources")
        assert gate == {
            "methods": ["ngram", "embedding"],
            "ngram": 13,
            "ngram_min_overlap": 0.2,
            "cosine": 0.8,
            "action": "drop",
            "guard": True,
            "embedding_budget": None,
            "answers": True,
            "answer_min_words": 8,
            "answer_min_tokens": 12,
            "code_min_overlap": 0.5,
        }, name
        # the real recipes' gate job asks for a GPU (MiniLM over ~1.6M candidates of a Tulu-size mix); twins: CPU
        assert resources["gpus"] == (0 if recipe.get("tiny") else 1), name


def test_tiny_generated_data_passes_the_ngram_gate():
    """All generated training sets vs tiny-eval + HumanEval: disjoint by construction, so nothing is flagged."""
    from menagerie.config import load_config
    from menagerie.data.contamination.items import humaneval_items, row_texts
    from menagerie.data.sources import normalize, raw_rows

    config = load_config("config.yaml")
    eval_rows, _ = raw_rows("tiny-eval", config["datasets"]["tiny-eval"])
    eval_texts = [r["question"] for r in eval_rows] + [i["text"] for i in humaneval_items()]
    for name in ("tiny-sft", "tiny-units-sft", "tiny-platypus", "tiny-prefs"):
        entry = config["datasets"][name]
        rows = normalize(raw_rows(name, entry)[0], entry["schema"], name, name)
        assert ngram_matches([row_texts(r)[0] for r in rows], eval_texts) == [], name


@pytest.mark.slow
def test_tiny_generated_data_passes_the_full_gate(tmp_path):
    from menagerie.config import load_config
    from menagerie.data.contamination.items import eval_items
    from menagerie.data.sources import normalize, raw_rows
    from menagerie.io import write_jsonl

    config = load_config("config.yaml")
    eval_file = tmp_path / "tiny-eval.jsonl"
    write_jsonl(raw_rows("tiny-eval", config["datasets"]["tiny-eval"])[0], eval_file)
    items, unchecked = eval_items(config, "tiny-tulu2-dpo", {"tiny-eval": str(eval_file)})
    assert unchecked == [] and {i["task"] for i in items} == {"heldout_exact", "humaneval_pass1"}
    parts = {}
    for name in ("tiny-sft", "tiny-units-sft", "tiny-platypus", "tiny-prefs"):
        entry = config["datasets"][name]
        # 400 rows of each keep this short (MiniLM embeds their lexical candidates); the n-gram test sees them all
        parts[name] = normalize(raw_rows(name, entry)[0][:400], entry["schema"], name, name)
    _, report = run_gate("tiny", SETTINGS, parts, items, unchecked)
    # The generated sets are disjoint by construction, by meaning too: commutative problems share one key (an
    # earlier ordered key let "47 + 24" train while "24 + 47" was held out; the gate flagged exactly those 6 rows).
    assert report["summary"]["flagged_rows"] == 0, report["pairs"]


def test_platypus_curation_exact_and_near_dedup():
    from menagerie.data.curation import curate

    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in [
            ("What is 2+2?", "4"),
            ("What is  2+2?", "It is 4."),
            ("Name a prime.", "7"),
            ("Write a haiku about the sea.", "waves"),
        ]
    ]
    kept, report = curate(rows, {"exact_dedup": True, "near_dup_cosine": None})
    assert [r["messages"][1]["content"] for r in kept] == ["It is 4.", "7", "waves"]  # longer output kept
    assert report == {"input_rows": 4, "after_exact_dedup": 3, "output_rows": 3}
    near = rows + [
        {
            "messages": [
                {"role": "user", "content": "Compose a haiku about the ocean."},
                {"role": "assistant", "content": "tide"},
            ]
        }
    ]
    kept, report = curate(near, {"exact_dedup": True, "near_dup_cosine": 0.7})
    assert report["after_near_dedup"] == 3 and all(r["messages"][1]["content"] != "tide" for r in kept)


def test_platypus_recipes_encode_curation():
    from menagerie.config import load_config

    config = load_config("config.yaml")
    for name in ("platypus2-13b", "platypus2-70b"):
        assert config["recipes"][name]["data"]["sft"]["curation"] == {"exact_dedup": True, "near_dup_cosine": 0.8}
    assert config["recipes"]["tiny-platypus2"]["data"]["sft"]["curation"] == {
        "exact_dedup": True,
        "near_dup_cosine": None,
    }


def test_guard_counts_repeated_numbers():
    """'54 + 17' must not match '54 + 54' (the embedding scored them 0.89; the guard once compared sets)."""
    assert not passes_guard(guard_terms("What is 54 + 54?"), guard_words("What is 54 + 17?"))
    assert passes_guard(guard_terms("What is 54 + 54?"), guard_words("Compute 54 plus 54."))
