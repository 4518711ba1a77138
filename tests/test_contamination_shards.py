"""The gate's row-wise work in forked workers: the same flagged pairs and candidates whatever the number of workers."""

from __future__ import annotations

import os

import pytest

from contamination_planted import FILLER, long_context, planted
from menagerie.data import embeddings
from menagerie.data.contamination import shards
from menagerie.data.contamination.candidates import lexical_candidates
from menagerie.data.contamination.ngram import ngram_matches
from menagerie.data.contamination.records import Run
from menagerie.data.contamination.items import row_texts


def test_ranges_cover_the_rows_in_order():
    assert shards.ranges(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shards.ranges(2, 4) == [(0, 1), (1, 2)]
    assert shards.ranges(0, 2) == [(0, 0)]


def test_map_shards_runs_in_other_processes_and_keeps_range_order():
    n = 2 * shards.MIN_ROWS_PER_WORKER
    parts = shards.map_shards(lambda lo, hi: (lo, hi, os.getpid()), n, workers=2)
    assert [(lo, hi) for lo, hi, _ in parts] == shards.ranges(n, 4)
    assert os.getpid() not in {pid for *_, pid in parts}
    # too few rows for two workers, or one worker: the calling process, one range
    assert shards.map_shards(lambda lo, hi: (lo, hi, os.getpid()), 100, workers=2) == [(0, 100, os.getpid())]


@pytest.fixture(scope="module")
def rows_and_items():
    """The planted rows inside long prose, among 4,500 shorter filler rows: enough rows for two workers.

    MiniLM runs first, as in the gate's second part (its workers fork after the first part's embeddings started
    torch's threads)."""
    embeddings.encode(["warm up"])
    eval_texts, planted_rows = planted()
    texts = [long_context(row_texts(r)[1], k) for k, r in enumerate(planted_rows)]
    texts += [long_context(FILLER[k % len(FILLER)], 1000 + k, 60) for k in range(4500)]
    order = sorted(range(len(texts)), key=lambda k: (k * 7919) % len(texts))  # planted rows in every range
    return [texts[k] for k in order], eval_texts


@pytest.mark.timeout(300)
def test_lexical_candidates_do_not_depend_on_workers(rows_and_items):
    texts, eval_texts = rows_and_items
    one, two = Run(), Run()
    serial = lexical_candidates(texts, eval_texts, run=one, workers=1)
    forked = lexical_candidates(texts, eval_texts, run=two, workers=2)
    assert len(serial) > 50 and forked == serial
    assert one.counts == two.counts


@pytest.mark.timeout(300)
def test_ngram_matches_do_not_depend_on_workers(rows_and_items):
    texts, eval_texts = rows_and_items
    serial = ngram_matches(texts, eval_texts, workers=1)
    assert len(serial) > 20 and ngram_matches(texts, eval_texts, workers=2) == serial
