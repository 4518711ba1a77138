"""Is a run a reproduction of its paper? One verdict per task with a published score, one for the published average,
one overall.

A score reproduces the paper when |Δ| <= max(2 x combined standard error, tolerance): the combined standard error is
sqrt(se_run^2 + se_paper^2) (papers report no standard errors, so se_paper is 0 unless one is recorded), and the
tolerance is the one config.yaml declares for the task's suite (`tolerances: <suite>: {points, justification}`, in the
suite's own units), 0 where none is declared. The same rule judges an eval.json (report) and a re-run (bundle check).
"""

from __future__ import annotations

import math

RULE = "reproduced when |Δ| <= max(2 x combined standard error, the suite's declared tolerance)"


def suite_tolerance(config: dict, suite: str | None) -> dict:
    """{points, justification} declared for `suite` in config.yaml `tolerances:`, or points 0 when none is."""
    declared = (config.get("tolerances") or {}).get(suite or "")
    return dict(declared) if declared else {"points": 0.0, "justification": "no tolerance declared for this suite"}


def judge(
    value: float | None,
    reference: float | None,
    stderr: float | None,
    tolerance: float,
    reference_stderr: float | None = None,
) -> dict | None:
    """The verdict of one score against a reference (the paper's, or a submitted one), None when either is missing."""
    if value is None or reference is None:
        return None
    delta = float(value) - float(reference)  # plain floats: metrics may carry numpy scalars (lm-eval)
    combined = math.sqrt(float(stderr or 0.0) ** 2 + float(reference_stderr or 0.0) ** 2)
    bound = max(2 * combined, float(tolerance))
    return {
        "reproduced": bool(abs(delta) <= bound + 1e-12),
        "delta": delta,
        "combined_stderr": combined,
        "tolerance": float(tolerance),
        "bound": bound,
    }


def average_stderr(tasks: list[dict]) -> float | None:
    """Standard error of the unweighted mean of independent task scores: sqrt(sum se_i^2) / n."""
    if not tasks or any(t.get("stderr") is None for t in tasks):
        return None
    return math.sqrt(sum(t["stderr"] ** 2 for t in tasks)) / len(tasks)


def task_verdicts(config: dict, tasks: dict[str, dict]) -> dict[str, dict | None]:
    """Each eval.json task's verdict against its `published` value (None: no published score, or not run)."""
    out = {}
    for name, task in tasks.items():
        if task.get("status") != "ok" or task.get("published") is None:
            out[name] = None
            continue
        tolerance = suite_tolerance(config, task.get("suite"))["points"]
        out[name] = judge(task["value"], task["published"], task.get("stderr"), tolerance)
    return out


def overall(tasks: dict[str, dict], average: dict | None) -> dict:
    """Summary of the per-task verdicts (in tasks[name]["verdict"]) and the average's.

    status: reproduced (every compared score holds and every task with a published score ran), partial (every
    compared score holds but a published task did not run), not_reproduced (any compared score fails), no_reference
    (nothing to compare with)."""
    compared = {n: t["verdict"] for n, t in tasks.items() if t.get("verdict")}
    failed = sorted(n for n, v in compared.items() if not v["reproduced"])
    not_run = sorted(n for n, t in tasks.items() if t.get("published") is not None and t.get("status") != "ok")
    if average and not average["reproduced"]:
        failed.append("average")
    if not compared and not average:
        status = "no_reference"
    elif failed:
        status = "not_reproduced"
    elif not_run:
        status = "partial"
    else:
        status = "reproduced"
    return {
        "status": status,
        "rule": RULE,
        "tasks_compared": len(compared),
        "tasks_reproduced": len(compared) - len([f for f in failed if f != "average"]),
        "failed": failed,
        "published_not_run": not_run,
        "average": average,
    }


def recipe_tolerance(config: dict, suites: list[str]) -> dict:
    """The tolerance of an average over several suites: the largest declared (with its suite named)."""
    best = {"points": 0.0, "justification": "no tolerance declared for these suites"}
    for suite in suites:
        declared = suite_tolerance(config, suite)
        if declared["points"] > best["points"]:
            best = {**declared, "suite": suite}
    return best


def mark(verdict: dict | None) -> str:
    """✓ / ✗ for a verdict, '' when there is none."""
    if not verdict:
        return ""
    return "✓" if verdict["reproduced"] else "✗"
