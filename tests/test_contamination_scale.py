"""Contamination gate at scale: lexical candidates keep every planted positive, only candidates are embedded,
long rows are checked in a window, eval-item vectors are cached."""

from __future__ import annotations

import numpy as np
import pytest

from contamination_planted import FILLER, PARAPHRASES, long_context, planted
from menagerie.data import embeddings
from menagerie.data.contamination.candidates import LexicalIndex, lexical_candidates
from menagerie.data.contamination.embedding import embedding_matches
from menagerie.data.contamination.records import Run
from menagerie.data.contamination.text import content_terms, stem
from menagerie.data.contamination.items import row_texts

POSITIVE = ("copy", "reformatted", "paraphrase")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MENAGERIE_EMBEDDING_CACHE", str(tmp_path / "embeddings"))


def _long_rows():
    """Every planted row again, inside ~400 words of neutral prose (past the first 128 word pieces)."""
    eval_texts, rows = planted()
    long = [
        {
            **r,
            "messages": [{"role": "user", "content": long_context(r["messages"][0]["content"], k)}, *r["messages"][1:]],
        }
        for k, r in enumerate(rows)
    ]
    return eval_texts, long


def _filler_rows(n: int) -> list[dict]:
    return [
        {
            "kind": "clean",
            "target": None,
            "messages": [
                {"role": "user", "content": long_context(FILLER[k % len(FILLER)], 1000 + k, 200)},
                {"role": "assistant", "content": "ok"},
            ],
        }
        for k in range(n)
    ]


def test_terms_stem_and_fold_operations():
    assert stem("boiling") == stem("boils") == "boil" and stem("minutes") == stem("minute")
    assert stem("cities") == "city" and stem("class") == "class"
    assert content_terms("What is 84 minus 29?") == ["84", "op:sub", "29"]
    assert set(content_terms("Subtract 29 from 84.")) == set(content_terms("What is 84 minus 29?"))


@pytest.mark.parametrize("layout", ["short", "long"])
def test_candidates_keep_every_planted_positive(layout):
    """The lexical filter drops no planted copy, reformatting or paraphrase, short or inside a long row."""
    eval_texts, rows = planted() if layout == "short" else _long_rows()
    prompts = [row_texts(r)[1] for r in rows]
    run = Run()
    pairs = {(c.row, c.item) for c in lexical_candidates(prompts, eval_texts, run=run)}
    missing = [
        (r["kind"], r["messages"][0]["content"][-80:])
        for k, r in enumerate(rows)
        if r["kind"] in POSITIVE and (k, eval_texts.index(r["target"])) not in pairs
    ]
    assert missing == []
    positives = sum(r["kind"] in POSITIVE for r in rows)
    counts = run.counts
    assert counts["verified_pairs"] >= positives and counts["candidate_pairs"] >= counts["verified_pairs"]
    assert [p.name for p in run.phases] == ["index", "candidates", "verify"] and all(p.seconds >= 0 for p in run.phases)


def test_candidate_filter_rejects_unrelated_rows():
    """Rows sharing no content with an item never become its candidates (the filter is not a pass-through)."""
    eval_texts, _ = planted()
    prompts = [long_context("Explain how a hash table works.", k, 200) for k in range(50)]
    index = LexicalIndex(eval_texts)
    linked = index.candidates(prompts)
    assert len(linked.rows) < 50 and (linked.fractions >= 0.15).all()
    assert lexical_candidates(prompts, eval_texts) == []


def test_only_candidates_are_embedded(monkeypatch):
    """The embedding step encodes each candidate window once and nothing else: 300 filler rows are not embedded."""
    eval_texts, rows = planted()
    rows = rows + _filler_rows(300)
    prompts = [row_texts(r)[1] for r in rows]
    encoded: list[str] = []
    real_encode = embeddings.encode

    def counting_encode(texts, **kwargs):
        encoded.extend(texts)
        return real_encode(texts, **kwargs)

    monkeypatch.setattr(embeddings, "encode", counting_encode)
    candidates = lexical_candidates(prompts, eval_texts)
    run = Run()
    found = embedding_matches(prompts, eval_texts, run=run, cache_dir=None)
    windows = {c.window for c in candidates}
    items = {eval_texts[c.item] for c in candidates}
    assert run.counts["embedded_windows"] == len(windows) and run.counts["embedded_items"] == len(items)
    assert len(encoded) == len(windows) + len(items) and set(encoded) <= windows | items
    assert len(windows) < len(rows) / 3  # embedding every row would encode 412 prompts
    assert not {m.row for m in found} & set(range(len(rows) - 300, len(rows)))  # filler never flagged


def test_long_rows_are_checked_in_a_window():
    """A paraphrase deep inside a long prompt is found through its window, where the first 128 word pieces of the
    prompt (the old input) miss it; near misses stay unflagged there too."""
    eval_texts, rows = _long_rows()
    keep = [k for k, r in enumerate(rows) if r["kind"] in ("paraphrase", "near_miss")]
    rows = [rows[k] for k in keep]
    prompts = [row_texts(r)[1] for r in rows]
    found = {m.row: m.item for m in embedding_matches(prompts, eval_texts, cache_dir=None)}
    para = [k for k, r in enumerate(rows) if r["kind"] == "paraphrase"]
    caught = [k for k in para if k in found and eval_texts[found[k]] == rows[k]["target"]]
    assert len(caught) >= len(PARAPHRASES) - 2
    assert not any(rows[k]["kind"] == "near_miss" for k in found)
    # the whole prompt (truncated to 128 word pieces) is far from the item: only the window catches it
    first = para[0]
    vectors = embeddings.encode([prompts[first], rows[first]["target"]])
    assert float(vectors[0] @ vectors[1]) < 0.8 and first in caught


def test_eval_item_vectors_are_cached(tmp_path, monkeypatch):
    calls: list[int] = []
    real_encode = embeddings.encode
    monkeypatch.setattr(embeddings, "encode", lambda texts, **kw: calls.append(len(texts)) or real_encode(texts, **kw))
    monkeypatch.setattr(embeddings, "MAX_SHARDS", 2)
    texts = ["What is 47 plus 38?", "Who painted the Mona Lisa?"]
    first = embeddings.encode_cached(texts, cache_dir=tmp_path)
    again = embeddings.encode_cached(texts[::-1], cache_dir=tmp_path)
    assert calls == [2] and np.array_equal(first[::-1], again)
    for k in range(3):  # one new text each time: shards merge past MAX_SHARDS
        embeddings.encode_cached(texts + [f"Name a prime greater than {k + 50}."], cache_dir=tmp_path)
    assert calls == [2, 1, 1, 1] and len(list(tmp_path.glob("shard-*.npz"))) <= 2
    stats = {}
    embeddings.encode_cached(texts + ["Name a prime greater than 51."], cache_dir=tmp_path, stats=stats)
    assert calls == [2, 1, 1, 1] and stats == {"encoded": 0, "cache_hits": 3}


def test_budget_embeds_best_ranked_and_counts_the_rest():
    eval_texts, rows = planted()
    prompts = [row_texts(r)[1] for r in rows]
    full, capped = Run(), Run()
    embedding_matches(prompts, eval_texts, run=full, cache_dir=None)
    found = embedding_matches(prompts, eval_texts, run=capped, cache_dir=None, max_pairs=10)
    assert capped.counts["embedded_pairs"] == 10
    assert capped.counts["unchecked_pairs"] == full.counts["verified_pairs"] - 10
    assert full.counts["unchecked_pairs"] == 0 and 0 < len(found) <= 10


def test_window_is_the_sentence_or_line_around_the_match():
    index = LexicalIndex(["How many seconds are in 70 minutes?"])
    words = " ".join(f"word{k}" for k in range(60))
    window, containment, matched, density = index.window(f"{words}\nConvert 70 minutes into seconds\n{words}", 0)
    assert window == "Convert 70 minutes into seconds" and containment == 1.0 and density == 0.75
    window, *_ = index.window(f"{words}. Please convert 70 minutes into seconds. Thanks {words}", 0)
    assert window == "Please convert 70 minutes into seconds."
    window, *_ = index.window(f"{words} convert 70 minutes into seconds {words}", 0)  # no boundary: the span,
    assert window == "convert 70 minutes into seconds"  # widened to 0.6 x 7 words
    short = LexicalIndex(["What are the crime rates in this area?"])
    assert short.window("crime rates?", 0)[1] == 0.0  # too short to stand for the item
    widened = short.window(f"{words}. Crime rates? {words}", 0)[0]
    assert "Crime rates?" in widened and len(widened.split()) == 5  # widened to 0.6 x 8 words
    assert short.window("What are crime rates in the area?", 0)[1] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("xdg", [False, True])
def test_embedding_cache_stays_in_the_project_however_snakemake_is_started(tmp_path, monkeypatch, xdg):
    """Snakemake started directly (no make, so no XDG_CACHE_HOME): the gate's eval-item vectors go under the
    project's .cache/, not the user's home; with XDG_CACHE_HOME set they follow it. A real Snakemake run of a rule
    that encodes through the gate's cache, in a scratch project."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    monkeypatch.delenv("MENAGERIE_EMBEDDING_CACHE")
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    home.mkdir()
    (project / "Snakefile").write_text(
        "rule encode:\n"
        "    output: 'where.txt'\n"
        f"    shell: \"{sys.executable} -c 'from menagerie.data.embeddings import encode_cached; "
        "from menagerie.data.contamination.gate import embedding_cache_dir; d = embedding_cache_dir(); "
        'encode_cached([\\"What is 47 plus 38?\\"], cache_dir=d); print(d)\' > {output}"\n'
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "MENAGERIE_EMBEDDING_CACHE")}
    env.update(HOME=str(home), PYTHONPATH=str(Path(__file__).resolve().parents[1]), HF_HUB_OFFLINE="1")
    if xdg:
        env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--quiet", "all"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    expected = (tmp_path / "xdg" if xdg else project / ".cache") / "menagerie" / "embeddings"
    assert Path((project / "where.txt").read_text().strip()) == expected
    assert len(list(expected.glob("shard-*.npz"))) == 1
    assert not (home / ".cache" / "menagerie").exists()  # (Snakemake keeps its own source cache there)
