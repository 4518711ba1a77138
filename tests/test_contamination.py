"""Contamination gate: n-gram index, guard, planted recall/precision, actions, and the tiny twins' data."""

from __future__ import annotations

import json

import pytest

from contamination_planted import NEAR_MISSES, PARAPHRASES, planted
from menagerie.data.contamination import NgramIndex, guard_terms, ngram_matches, passes_guard, words
from menagerie.data.gate import ContaminationError, find_pairs, run_gate

SETTINGS = {"methods": ["ngram", "embedding"], "ngram": 13, "cosine": 0.8, "action": "drop", "guard": True}


@pytest.fixture(autouse=True)
def _private_embedding_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MENAGERIE_EMBEDDING_CACHE", str(tmp_path / "embeddings"))


def test_words_lowercase_and_strip_punctuation():
    assert words("Hello, WORLD!! It's 1,000 <|user|>") == ["hello", "world", "it", "s", "1000", "user"]
    assert words("What is 43 - 35?") != words("What is 43 + 35?")   # operators are content


def test_ngram_long_item_needs_a_13_gram():
    item = "the quick brown fox jumps over the lazy dog while the farmer sleeps in the barn at noon"
    train = ["Story: THE quick brown fox -- jumps over the lazy dog, while the farmer sleeps! The end.",
             "the quick brown fox jumps over the lazy dog",   # only 9 words: no 13-gram
             "unrelated text about cooking pasta"]
    found = ngram_matches(train, [item], n=13)
    assert [(row, item_index) for row, item_index, _ in found] == [(0, 0)]
    assert 0 < found[0][2] < 1   # score: fraction of the item's 13-grams present


def test_ngram_short_item_must_appear_whole():
    found = ngram_matches(["<|user|>\nwhat IS 23 plus 58??\n<|assistant|>\n81", "what is 23 plus 59"],
                          ["What is 23 plus 58?"])
    assert [(r, i, s) for r, i, s in found] == [(0, 0, 1.0)]


def test_ngram_index_is_hashed_not_pairwise():
    index = NgramIndex([f"item number {i} asks about topic {i * 7} in detail" for i in range(2000)], n=13)
    assert sum(len(keys) for keys, _ in index.tables.values()) == 2000   # 9-word items: one whole-item gram each
    assert index.query(["item number 1999 asks about topic 13993 in detail, please"]) == [(0, 1999, 1.0)]


def test_ngram_shared_by_several_items_counts_for_each():
    """Templated items share long n-grams; a copy of the second one must still score 1.0 for it (an n-gram once
    counted only for the first item holding it, so copies of templated items went unflagged)."""
    template = "Select the best English interpretation of the given proposition, using the following translation key:"
    items = [f"{template} Ax: x is an apple. Bx: x is blue.", f"{template} Cx: x is a cat. Dx: x is dark."]
    found = ngram_matches([f"Intro text. {items[1]} Answer: (A)", f"{items[0]} Answer: (B)"], items, n=13)
    assert [(row, item, score) for row, item, score in found] == [(0, 1, 1.0), (1, 0, 1.0)]


def test_guard_numbers_entities_operations_units():
    terms = guard_terms("How many minutes are in 5 hours?")
    assert passes_guard(terms, set(words("Convert 5 hours to minutes.")))
    assert not passes_guard(terms, set(words("Convert 5 minutes to seconds.")))
    assert not passes_guard(guard_terms("What is 43 + 35?"), set(words("What is 43 - 35?")))
    assert not passes_guard(guard_terms("What is the capital of France?"), set(words("the capital of Spain")))
    assert not passes_guard(guard_terms("When did World War II end?"), set(words("When did World War I end?")))


def _measure(rows, items, settings):
    pairs = find_pairs(rows, items, settings)
    flagged: dict[int, set[str]] = {}
    for pair in pairs:
        flagged.setdefault(pair["row"], set()).add(pair["eval_text"])
    stats = {}
    for kind in ("copy", "reformatted", "paraphrase", "near_miss", "clean"):
        index = [i for i, r in enumerate(rows) if r["kind"] == kind]
        hits = [i for i in index if i in flagged]
        right = [i for i in hits if rows[i]["target"] in flagged[i]]
        stats[kind] = (len(index), len(hits), len(right))
    return stats, pairs


def test_planted_recall_and_precision(capsys):
    eval_texts, rows = planted()
    assert len(PARAPHRASES) >= 20 and len(NEAR_MISSES) >= 20
    items = [{"task": "planted", "id": str(i), "text": t} for i, t in enumerate(eval_texts)]
    stats, _ = _measure(rows, items, SETTINGS)
    positives = sum(stats[k][0] for k in ("copy", "reformatted", "paraphrase"))
    caught = sum(stats[k][2] for k in ("copy", "reformatted", "paraphrase"))
    flagged = sum(stats[k][1] for k in stats)
    recall, precision = caught / positives, caught / max(flagged, 1)
    with capsys.disabled():
        print(f"\n[contamination planted set, cosine {SETTINGS['cosine']}] "
              + ", ".join(f"{k}: {hit}/{n} flagged" for k, (n, hit, _) in stats.items())
              + f" | recall {recall:.3f} (copies+reformatted+paraphrases), precision {precision:.3f}")
    assert stats["copy"][2] == stats["copy"][0] and stats["reformatted"][2] == stats["reformatted"][0]
    assert recall >= 0.95
    assert stats["near_miss"][1] == 0 and stats["clean"][1] == 0
    # the embedding method is what catches paraphrases: n-grams alone miss most of them
    ngram_only, _ = _measure(rows, items, {**SETTINGS, "methods": ["ngram"]})
    assert ngram_only["paraphrase"][2] < stats["paraphrase"][2]


def _rows(texts):
    return [{"id": f"r{i}", "messages": [{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]}
            for i, t in enumerate(texts)]


def test_actions_drop_warn_fail():
    items = [{"task": "t", "id": "e0", "text": "What is 23 plus 58?"}]
    parts = {"sft": _rows(["what is 23 plus 58", "what is 24 plus 58", "Write a poem."])}
    settings = {**SETTINGS, "methods": ["ngram"]}
    kept, report = run_gate("r", settings, parts, items, ["mmlu_0shot"])
    assert [r["id"] for r in kept["sft"]] == ["r1", "r2"]
    summary = report["summary"]
    assert summary["flagged_rows"] == 1 and summary["unchecked_tasks"] == ["mmlu_0shot"]
    assert summary["parts"]["sft"] == {"train_rows": 3, "flagged_rows": 1, "kept_rows": 2,
                                       "by_method": {"ngram": 1}, "by_task": {"t": 1}}
    pair = report["pairs"]["sft"][0]
    assert pair["method"] == "ngram" and pair["eval_text"] == "What is 23 plus 58?" and pair["score"] == 1.0
    json.dumps(report)
    kept, _ = run_gate("r", {**settings, "action": "warn"}, parts, items, [])
    assert len(kept["sft"]) == 3
    with pytest.raises(ContaminationError, match=r"recipe 'r': .*sft 1 of 3 \(ngram 1\)"):
        run_gate("r", {**settings, "action": "fail"}, parts, items, [])


def test_recipes_get_default_gate():
    from menagerie.config import load_config

    config = load_config("config.yaml")
    for name, recipe in config["recipes"].items():
        gate = dict(recipe["contamination"])
        resources = gate.pop("resources")
        assert gate == {"methods": ["ngram", "embedding"], "ngram": 13, "cosine": 0.8,
                        "action": "drop", "guard": True, "embedding_budget": None}, name
        # the real recipes' gate job asks for a GPU (MiniLM over ~1.6M candidates of a Tulu-size mix); twins: CPU
        assert resources["gpus"] == (0 if recipe.get("tiny") else 1), name


def test_tiny_generated_data_passes_the_ngram_gate():
    """All generated training sets vs tiny-eval + HumanEval: disjoint by construction, so nothing is flagged."""
    from menagerie.config import load_config
    from menagerie.data.gate import humaneval_items, row_texts
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
    from menagerie.data.gate import eval_items
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

    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in [("What is 2+2?", "4"), ("What is  2+2?", "It is 4."), ("Name a prime.", "7"),
                         ("Write a haiku about the sea.", "waves")]]
    kept, report = curate(rows, {"exact_dedup": True, "near_dup_cosine": None})
    assert [r["messages"][1]["content"] for r in kept] == ["It is 4.", "7", "waves"]   # longer output kept
    assert report == {"input_rows": 4, "after_exact_dedup": 3, "output_rows": 3}
    near = rows + [{"messages": [{"role": "user", "content": "Compose a haiku about the ocean."},
                                 {"role": "assistant", "content": "tide"}]}]
    kept, report = curate(near, {"exact_dedup": True, "near_dup_cosine": 0.7})
    assert report["after_near_dedup"] == 3 and all(r["messages"][1]["content"] != "tide" for r in kept)


def test_platypus_recipes_encode_curation():
    from menagerie.config import load_config

    config = load_config("config.yaml")
    for name in ("platypus2-13b", "platypus2-70b"):
        assert config["recipes"][name]["data"]["sft"]["curation"] == {"exact_dedup": True, "near_dup_cosine": 0.8}
    assert config["recipes"]["tiny-platypus2"]["data"]["sft"]["curation"] == {"exact_dedup": True,
                                                                              "near_dup_cosine": None}


def test_guard_counts_repeated_numbers():
    """'54 + 17' must not match '54 + 54' (the embedding scored them 0.89; the guard once compared sets)."""
    from menagerie.data.contamination import guard_words

    assert not passes_guard(guard_terms("What is 54 + 54?"), guard_words("What is 54 + 17?"))
    assert passes_guard(guard_terms("What is 54 + 54?"), guard_words("Compute 54 plus 54."))
