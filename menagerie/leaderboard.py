"""results/leaderboard.{json,md,html} and results/leaderboard/<suite>.png: one row per built recipe, its scores,
the base model's and the paper's (the HTML page and the charts are drawn by menagerie.leaderboard_html)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from menagerie.overrides import override_summary
from menagerie.report import validate_eval
from menagerie.rounding import PAPER_DIGITS, SCORE_DIGITS, fmt, round_half_up
from menagerie.verdict import mark as verdict_mark

_SCORE_KEYS = ("average", "base_average", "published_average_delta", "average_as_published")
_TASK_SCORE_KEYS = ("value", "stderr", "delta_vs_base", "z_vs_base", "delta_vs_published")


def leaderboard_rows(eval_files: list[Path]) -> list[dict]:
    rows = []
    for path in sorted(eval_files):
        entry = json.loads(Path(path).read_text())
        validate_eval(entry, str(path))
        rows.append(
            {
                "recipe": entry["recipe"],
                "tiny": entry["tiny"],
                "average": entry["average"],
                "base_average": (entry["base"] or {}).get("average"),
                "published_average": ((entry["published"] or {}).get("metrics") or {}).get("average"),
                "published_source": (entry["published"] or {}).get("source"),
                # Δpaper: the paper's average recomputed from our tasks (all of them ran) minus the paper's number
                "published_average_delta": (entry["published"] or {}).get("average_delta"),
                "average_as_published": (entry.get("average_as_published") or {}).get("value"),
                "tasks": {
                    name: {
                        k: t.get(k)
                        for k in (
                            "status",
                            "suite",
                            "metric",
                            "value",
                            "stderr",
                            "n",
                            "delta_vs_base",
                            "z_vs_base",
                            "published",
                            "delta_vs_published",
                            "reason",
                            "verdict",
                        )
                    }
                    for name, t in entry["tasks"].items()
                },
                "verdict": (entry.get("verdict") or {}).get("status"),
                "average_verdict": (entry.get("verdict") or {}).get("average"),
                "contamination": entry["provenance"].get("contamination"),
                "modified": override_summary(entry["provenance"].get("overrides")),
                "git_commit": entry["provenance"]["git_commit"],
                "config_hash": entry["provenance"]["config_hash"],
                "eval_json": str(path),
            }
        )
    rows.sort(key=lambda r: (r["average"] is None, -(r["average"] or 0)))
    return rows


def rounded_row(row: dict) -> dict:
    """A leaderboard row as leaderboard.json holds it: numbers rounded as the md and html pages show them (the
    linked eval.json keeps full precision)."""
    out = {
        **row,
        **{k: round_half_up(row.get(k), SCORE_DIGITS) for k in _SCORE_KEYS},
        "published_average": round_half_up(row.get("published_average"), PAPER_DIGITS),
    }
    out["tasks"] = {
        name: {
            **task,
            **{k: round_half_up(task.get(k), SCORE_DIGITS) for k in _TASK_SCORE_KEYS},
            "published": round_half_up(task.get("published"), PAPER_DIGITS),
        }
        for name, task in row["tasks"].items()
    }
    return out


def _fmt(value, digits: int = SCORE_DIGITS) -> str:
    return fmt(value, digits)


def render_markdown(rows: list[dict], base_dir: Path | None = None) -> str:
    """The leaderboard as markdown; links are relative to `base_dir` (where the .md file lives)."""
    tasks = sorted({t for r in rows for t in r["tasks"]})
    head = ["recipe", "average", "base avg", "paper avg", *tasks]
    lines = [
        "# menagerie leaderboard",
        "",
        "Scores in percent unless the task says otherwise; `Δbase` is the gain over the base model with its z "
        "score; skipped tasks show why in eval.json. ✓ / ✗: the paper's score reproduced or not "
        "(|Δ| <= max(2 x combined standard error, the suite's tolerance); menagerie/verdict.py).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        link = os.path.relpath(r["eval_json"], base_dir) if base_dir else r["eval_json"]
        mark = " (modified*)" if r.get("modified") else ""
        paper_average = _fmt(r["published_average"], PAPER_DIGITS)
        if r.get("average_verdict"):
            paper_average += f" {verdict_mark(r['average_verdict'])}"
        cells = [f"[{r['recipe']}]({link}){mark}", _fmt(r["average"]), _fmt(r["base_average"]), paper_average]
        for t in tasks:
            task = r["tasks"].get(t)
            if task is None:
                cells.append("")
            elif task["status"] != "ok":
                cells.append("skipped")
            else:
                cell = f"{_fmt(task['value'])} ± {_fmt(task['stderr'])}"
                if task["delta_vs_base"] is not None:
                    delta = fmt(task["delta_vs_base"], SCORE_DIGITS, signed=True)
                    cell += f" (Δbase {delta}, z {_fmt(task['z_vs_base'])})"
                if task["published"] is not None:
                    verdict = f" {verdict_mark(task['verdict'])}" if task.get("verdict") else ""
                    cell += f" [paper {_fmt(task['published'], PAPER_DIGITS)}{verdict}]"
                cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        f"- *{r['recipe']}*: {r['modified']}; the differences are in its eval.json (`provenance.overrides`)"
        for r in rows
        if r.get("modified")
    ]
    if notes:
        lines += ["", "(modified*) builds that are not the published recipe:", *notes]
    return "\n".join(lines) + "\n"


def write_leaderboard(
    eval_files: list[Path], json_out: Path, md_out: Path, html_out: Path | None = None, charts_dir: Path | None = None
) -> list[dict]:
    """Every output is written atomically; the charts directory is replaced whole (it holds one PNG per suite).
    Returns the rows as leaderboard.json holds them (rounded, see `rounded_row`)."""
    from menagerie.io import atomic_directory, atomic_open

    rows = leaderboard_rows(eval_files)
    charts: dict[str, bytes] = {}
    if html_out is not None or charts_dir is not None:
        from menagerie.leaderboard_html import render_html, suite_charts

        charts = suite_charts(rows)
    if charts_dir is not None:
        with atomic_directory(charts_dir) as tmp:
            for filename, png in charts.items():
                (tmp / filename).write_bytes(png)
    if html_out is not None:
        with atomic_open(html_out) as handle:
            handle.write(render_html(rows, charts, html_out.parent))
    with atomic_open(json_out) as handle:
        json.dump({"schema_version": 1, "rows": [rounded_row(r) for r in rows]}, handle, indent=2, sort_keys=True)
    with atomic_open(md_out) as handle:
        handle.write(render_markdown(rows, md_out.parent))
    return [rounded_row(r) for r in rows]
