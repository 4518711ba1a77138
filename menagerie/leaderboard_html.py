"""results/leaderboard.html and results/leaderboard/<suite>.png, drawn from menagerie.leaderboard's rows.

The page is self-contained: inline CSS, no scripts, the charts embedded as data: URIs (the same PNG bytes as the
files in results/leaderboard/), links relative to the page (each recipe's eval.json, and its Open LLM Leaderboard v1
results.json where one was written). Every text that comes from an eval.json is HTML-escaped.
"""

from __future__ import annotations

import base64
import io
import os
import re
from html import escape
from pathlib import Path
from urllib.parse import quote

from menagerie.rounding import PAPER_DIGITS, SCORE_DIGITS, fmt, round_half_up
from menagerie.verdict import mark

NO_SUITE = "other"  # tasks of an eval.json written before tasks recorded their suite

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #1d1d1f; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; }
p.note { color: #555; max-width: 60rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #d0d0d7; padding: .3rem .5rem; vertical-align: top; text-align: right; }
th { background: #f2f2f6; } td.recipe, th.recipe, td.text, th.text { text-align: left; }
tr:nth-child(even) td { background: #fafafc; }
.verdict.ok { color: #1a7f37; } .verdict.fail { color: #b42318; }
.tiny { font-size: .75rem; color: #fff; background: #8a8a99; border-radius: .3rem; padding: 0 .3rem; }
.modified { font-size: .75rem; color: #fff; background: #b26a00; border-radius: .3rem; padding: 0 .3rem; }
.skipped { color: #8a8a99; font-style: italic; }
.pos { color: #1a7f37; } .neg { color: #c62828; }
.sub { display: block; font-size: .78rem; color: #555; }
figure { margin: .5rem 0 1rem; } figure img { max-width: 100%; border: 1px solid #e0e0e6; }
figcaption { font-size: .8rem; color: #555; }
details.gate-matches { margin-top: .3rem; font-size: .8rem; max-width: 44rem; }
.gate-match { border-top: 1px solid #e0e0e6; padding: .3rem 0; }
.gate-match p { margin: .2rem 0; white-space: pre-wrap; } mark { background: #ffe08a; }
"""


def suite_of(task: dict) -> str:
    return task.get("suite") or NO_SUITE


def suites(rows: list[dict]) -> dict[str, list[str]]:
    """suite -> its task names (sorted), over every row."""
    out: dict[str, set[str]] = {}
    for row in rows:
        for name, task in row["tasks"].items():
            out.setdefault(suite_of(task), set()).add(name)
    return {suite: sorted(names) for suite, names in sorted(out.items())}


def chart_filename(suite: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", suite) + ".png"


# ------------------------------------------------------------------------------------------- charts


def paper_lines(tasks: list[str], rows: list[dict]) -> int:
    """How many dashed paper lines the suite's chart draws: one per (recipe, task) with a published value."""
    return sum(1 for r in rows for t in tasks if (r["tasks"].get(t) or {}).get("published") is not None)


def chart_caption(suite: str, tasks: list[str], rows: list[dict]) -> str:
    """The caption under a suite's chart; it mentions the dashed paper line only where the chart draws one."""
    paper = "dashed: the paper's value" if paper_lines(tasks, rows) else "no paper value for these tasks"
    return f"bars: this build (± stderr); {paper}; also at leaderboard/{chart_filename(suite)}"


def suite_chart(suite: str, tasks: list[str], rows: list[dict]) -> bytes:
    """One PNG: a group of bars per recipe (one bar per task of the suite, with its stderr), the paper's value as a
    dashed black line across the bar where the paper reports one, `n/a` where the task was skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    recipes = [r for r in rows if any(t in r["tasks"] for t in tasks)]
    width = 0.8 / max(len(tasks), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + 0.45 * len(recipes) * max(len(tasks), 2)), 4.0))
    colors = plt.get_cmap("tab10")
    handles = []
    for i, name in enumerate(tasks):
        color = colors(i % 10)
        handles.append(Patch(color=color, label=name))
        for x, row in enumerate(recipes):
            task = row["tasks"].get(name)
            if task is None:
                continue
            pos = x - 0.4 + width * (i + 0.5)
            if task.get("status") == "ok" and task.get("value") is not None:
                ax.bar(
                    pos,
                    task["value"],
                    width * 0.92,
                    color=color,
                    yerr=task.get("stderr") or None,
                    capsize=2,
                    error_kw={"elinewidth": 0.8},
                )
            else:
                ax.text(pos, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="#666")
            if task.get("published") is not None:
                ax.hlines(
                    task["published"],
                    pos - width / 2,
                    pos + width / 2,
                    colors="black",
                    linestyles="--",
                    linewidth=1.4,
                    zorder=3,
                )
    if paper_lines(tasks, rows):
        handles.append(Line2D([], [], color="black", linestyle="--", label="paper"))
    ax.set_xticks(range(len(recipes)), [r["recipe"] for r in recipes], rotation=20, ha="right", fontsize=8)
    ax.set_xlim(-0.6, max(len(recipes), 1) - 0.4)
    ax.set_ylabel("score")
    ax.set_title(f"suite {suite}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})  # no version stamp: same rows, same bytes
    plt.close(fig)
    return buffer.getvalue()


def suite_charts(rows: list[dict]) -> dict[str, bytes]:
    """{'<suite>.png': PNG bytes} for every suite with at least one recipe."""
    return {chart_filename(suite): suite_chart(suite, tasks, rows) for suite, tasks in suites(rows).items()}


# ------------------------------------------------------------------------------------------- page


def _num(value, digits: int = SCORE_DIGITS) -> str:
    return fmt(value, digits)


def _delta(value, label: str) -> str:
    if value is None:
        return ""
    shown = round_half_up(value, SCORE_DIGITS)
    cls = "pos" if shown > 0 else "neg" if shown < 0 else ""
    return f'<span class="sub {cls}">{escape(label)} {fmt(value, SCORE_DIGITS, signed=True)}</span>'


def _verdict(verdict: dict | None) -> str:
    """✓ / ✗ against the paper (menagerie.verdict), with the bound in the tooltip."""
    if not verdict:
        return ""
    cls, word = ("ok", "reproduced") if verdict["reproduced"] else ("fail", "not reproduced")
    title = escape(f"{word}: |Δ| {abs(verdict['delta']):.2f} vs bound {verdict['bound']:.2f}", quote=True)
    return f'<span class="sub verdict {cls}" title="{title}">{mark(verdict)} {word}</span>'


def _link(path: str | Path, base_dir: Path | None) -> str:
    target = os.path.relpath(path, base_dir) if base_dir is not None else str(path)
    return escape(quote(Path(target).as_posix()), quote=True)


def contamination_text(summary: dict | None) -> str:
    """One line for the page: what the contamination gate flagged before training."""
    if not summary:
        return "no gate report"
    parts = summary.get("parts") or {}
    train_rows = sum(p.get("train_rows", 0) for p in parts.values())
    text = (
        f"{summary['flagged_rows']} of {train_rows} training rows flagged against {summary['eval_items']} "
        f"eval items (action: {summary['action']})"
    )
    unchecked = summary.get("unchecked_tasks") or []
    if unchecked:
        text += f"; {len(unchecked)} task(s) without local test items unchecked"
    return text


def highlighted(text: str, spans: list) -> str:
    """`text` HTML-escaped, with each [start, end) character span in <mark>."""
    out, at = [], 0
    for start, end in sorted((int(a), int(b)) for a, b in spans or []):
        start = max(start, at)
        if end <= start:
            continue
        out += [escape(text[at:start]), "<mark>", escape(text[start:end]), "</mark>"]
        at = end
    return "".join(out) + escape(text[at:])


def _gate_matches(examples: list[dict], flagged: int) -> str:
    """The gate's example flagged rows, the matched text highlighted in the row and in the eval item."""
    if not examples:
        return ""
    shown = f"{len(examples)} of {flagged}" if flagged > len(examples) else f"{len(examples)}"
    out = [f'<details class="gate-matches"><summary>what matched ({shown} flagged rows)</summary>']
    for e in examples:
        head = (
            f"{e.get('part')} row {e.get('row')} ({e.get('train_id')}): {', '.join(e.get('methods') or [])}; "
            f"{e.get('method')} {e.get('kind')} score {e.get('score')} ≥ {e.get('threshold')}; "
            f"{e.get('eval_task')} {e.get('eval_id')}"
        )
        out.append(
            f'<div class="gate-match"><span class="sub">{escape(head)}</span>'
            f'<p class="train">{highlighted(e.get("train_excerpt", ""), e.get("train_spans"))}</p>'
            f'<p class="eval"><em>eval item:</em> '
            f"{highlighted(e.get('eval_text', ''), e.get('eval_spans'))}</p></div>"
        )
    out.append("</details>")
    return "".join(out)


def _contamination_cell(summary: dict | None) -> str:
    detail = ""
    if summary:
        lines = [
            f"{part}: {p.get('flagged_rows', 0)} of {p.get('train_rows', 0)} flagged"
            + "".join(f", {m} {c}" for m, c in (p.get("by_method") or {}).items())
            for part, p in (summary.get("parts") or {}).items()
        ]
        unchecked = summary.get("unchecked_tasks") or []
        if unchecked:
            lines.append("unchecked: " + ", ".join(unchecked))
        detail = "".join(f'<span class="sub">{escape(line)}</span>' for line in lines)
        detail += _gate_matches(summary.get("examples") or [], summary.get("flagged_rows", 0))
    return f'<td class="text contamination">{escape(contamination_text(summary))}{detail}</td>'


def _task_cell(task: dict | None) -> str:
    if task is None:
        return "<td></td>"
    paper = task.get("published")
    paper_html = f'<span class="sub">paper {escape(_num(paper, PAPER_DIGITS))}</span>' if paper is not None else ""
    if task.get("status") != "ok":
        reason = escape(task.get("reason") or "skipped", quote=True)
        return f'<td><span class="skipped" title="{reason}">skipped</span>{paper_html}</td>'
    cell = escape(_num(task.get("value")))
    if task.get("stderr") is not None:
        cell += f" ± {escape(_num(task['stderr']))}"
    cell += paper_html + _delta(task.get("delta_vs_published"), "Δpaper") + _verdict(task.get("verdict"))
    if task.get("delta_vs_base") is not None:
        z = task.get("z_vs_base")
        cell += _delta(task["delta_vs_base"], "Δbase") + (
            f'<span class="sub">z {escape(_num(z))}</span>' if z is not None else ""
        )
    return f"<td>{cell}</td>"


def _recipe_cell(row: dict) -> str:
    badge = ' <span class="tiny">tiny</span>' if row.get("tiny") else ""
    if row.get("modified"):
        badge += f' <span class="modified" title="{escape(row["modified"], quote=True)}">modified</span>'
        badge += f'<span class="sub">{escape(row["modified"])}</span>'
    return f'<td class="recipe">{escape(row["recipe"])}{badge}</td>'


def _files_cell(row: dict, base_dir: Path | None) -> str:
    links = [f'<a class="provenance" href="{_link(row["eval_json"], base_dir)}">eval.json</a>']
    v1 = Path(row["eval_json"]).parent / "openllm_v1" / "results.json"
    if v1.exists():
        links.append(f'<a class="openllm-v1" href="{_link(v1, base_dir)}">Open LLM v1 results.json</a>')
    commit = escape((row.get("git_commit") or "")[:12])
    return f'<td class="text">{" · ".join(links)}<span class="sub">commit {commit}</span></td>'


def summary_table(rows: list[dict], base_dir: Path | None) -> str:
    head = ["recipe", "average", "base avg", "paper avg", "Δpaper avg", "contamination gate", "provenance"]
    text = {"recipe", "contamination gate", "provenance"}
    out = [
        '<table id="summary">',
        "<thead><tr>"
        + "".join(f'<th class="{"text" if h in text else "num"}">{escape(h)}</th>' for h in head)
        + "</tr></thead>",
        "<tbody>",
    ]
    for row in rows:
        average, paper = row.get("average"), row.get("published_average")
        paper_cell = escape(_num(paper, PAPER_DIGITS))
        if row.get("published_source"):
            paper_cell += f'<span class="sub">{escape(row["published_source"])}</span>'
        delta = row.get("published_average_delta")  # on the paper's own average only (report.py)
        ran = sum(t.get("status") == "ok" for t in row["tasks"].values())
        average_cell = escape(_num(average))
        if ran < len(row["tasks"]):  # the average covers only the tasks that ran
            average_cell += f'<span class="sub">{ran} of {len(row["tasks"])} tasks</span>'
        out.append(
            f'<tr class="recipe-row" data-recipe="{escape(row["recipe"], quote=True)}">'
            + _recipe_cell(row)
            + f"<td>{average_cell}</td>"
            + f"<td>{escape(_num(row.get('base_average')))}</td><td>{paper_cell}</td>"
            + f"<td>{(_delta(delta, '') + _verdict(row.get('average_verdict'))) or '—'}</td>"
            + _contamination_cell(row.get("contamination"))
            + _files_cell(row, base_dir)
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def suite_section(suite: str, tasks: list[str], rows: list[dict], png: bytes | None) -> str:
    recipes = [r for r in rows if any(t in r["tasks"] for t in tasks)]
    sid = escape(chart_filename(suite)[:-4], quote=True)
    out = [f'<section class="suite" id="suite-{sid}">', f"<h2>Suite {escape(suite)}</h2>"]
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        out.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{escape(f"bar chart of suite {suite}")}" '
            f'data-suite="{escape(suite, quote=True)}"><figcaption>'
            f"{escape(chart_caption(suite, tasks, rows))}</figcaption></figure>"
        )
    out.append(
        f'<table class="suite-table" data-suite="{escape(suite, quote=True)}"><thead><tr>'
        '<th class="recipe">recipe</th>' + "".join(f"<th>{escape(t)}</th>" for t in tasks) + "</tr></thead><tbody>"
    )
    for row in recipes:
        out.append(
            f'<tr class="suite-row" data-recipe="{escape(row["recipe"], quote=True)}">'
            + _recipe_cell(row)
            + "".join(_task_cell(row["tasks"].get(t)) for t in tasks)
            + "</tr>"
        )
    out.append("</tbody></table></section>")
    return "\n".join(out)


def render_html(rows: list[dict], charts: dict[str, bytes], base_dir: Path | None = None) -> str:
    """The leaderboard page; links are relative to `base_dir` (where the .html file lives)."""
    body = [
        "<h1>menagerie leaderboard</h1>",
        '<p class="note">One row per built recipe, best average first. Scores in percent unless the task says '
        "otherwise, ± the standard error; <em>paper</em> is the published number, <em>Δpaper</em> this build minus "
        "the paper, <em>Δbase</em> the gain over the base model with its z score. Skipped tasks show why when "
        "hovered, and in eval.json.</p>",
    ]
    if not rows:
        body.append('<p class="note">No recipe has been built yet.</p>')
    else:
        body.append(summary_table(rows, base_dir))
        for suite, tasks in suites(rows).items():
            body.append(suite_section(suite, tasks, rows, charts.get(chart_filename(suite))))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>menagerie leaderboard</title>\n<style>"
        + CSS
        + "</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
