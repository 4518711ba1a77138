"""REPRODUCTION.md: the one page of a bundle a challenge organiser reads, generated from the bundle's own members."""

from __future__ import annotations

import json

from menagerie.verdict import RULE, mark

STATUS_WORDS = {
    "reproduced": "REPRODUCED",
    "partial": "PARTIALLY REPRODUCED (some published tasks did not run)",
    "not_reproduced": "NOT REPRODUCED",
    "no_reference": "NO PUBLISHED SCORES TO COMPARE WITH",
}


def _num(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _hours(hours: float | None) -> str:
    if hours is None:
        return "—"
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:.2f} h"


def _gpus(record: dict) -> str:
    hardware = (record.get("environment") or {}).get("hardware") or {}
    gpus = hardware.get("gpus")
    if gpus:
        names = sorted(set(gpus))
        return f"{len(gpus)} x {', '.join(names)}"
    return f"CPU only ({hardware.get('cpus', '?')} cores, {hardware.get('processor') or hardware.get('machine', '?')})"


def render_reproduction(contents, recipe: str) -> str:
    """The page, from eval.json, provenance/*, budget/usage.json, environment/* and models/*.json in `contents`."""
    entry = contents.json("eval.json")
    prov = entry["provenance"]
    verdict = entry.get("verdict") or {"status": "no_reference", "average": None}
    usage = contents.json("budget/usage.json") if "budget/usage.json" in contents.members else None
    records = {
        name.removeprefix("provenance/"): json.loads(contents.data(name))
        for name in contents.members
        if name.startswith("provenance/") and name.endswith("provenance.json")
    }
    lines = [f"# Reproduction of `{recipe}`: {STATUS_WORDS[verdict['status']]}", ""]
    lines += [f"{entry.get('description') or ''}".strip(), ""] if entry.get("description") else []
    lines += [
        f"- **Paper**: {entry.get('paper') or '—'}; published scores: "
        f"{(entry.get('published') or {}).get('source') or 'none'}",
        f"- **Code**: commit `{prov['git_commit']}`; recipe config hash `{prov['config_hash']}` "
        "(config/recipe.json)" + ("; a tiny twin (CPU stand-in), not the published scale" if entry.get("tiny") else ""),
        f"- **Environment**: uv.lock sha256 `{(prov.get('uv_lock_sha256') or '—')[:16]}…`; container "
        f"`{prov.get('container') or 'none (the locked venv)'}`; "
        + ", ".join(
            f"{k} {v}"
            for k, v in sorted(prov.get("packages", {}).items())
            if k in ("torch", "transformers", "trl", "peft", "lm-eval", "vllm")
        ),
        f"- **Models**: base `{entry['model']['base']}` -> final `{entry['model']['final']}`",
        "",
    ]
    lines += ["## What ran, on what, for how long", "", "| stage | hardware | wall time | notes |", "|---|---|---|---|"]
    for name, record in sorted(records.items(), key=lambda item: (str(item[1].get("started", "")), item[0])):
        notes = []
        metrics = record.get("metrics") or {}
        if "global_step" in metrics:
            notes.append(f"{metrics['global_step']} steps")
        if record.get("resumed_from"):
            notes.append(f"resumed from {record['resumed_from'].rsplit('/', 1)[-1]}")
        if record.get("stopped_for_budget"):
            notes.append("**stopped by the budget**")
        label = name.removesuffix("/provenance.json").removesuffix("/metrics.provenance.json").replace("/", " ")
        lines.append(
            f"| {label} | {_gpus(record)} | "
            f"{_hours(record['wall_time_s'] / 3600) if 'wall_time_s' in record else '—'} | "
            f"{'; '.join(notes)} |"
        )
    lines.append("")
    if usage:
        budget = usage.get("budget")
        held = {True: "**held**", False: "**overrun**", None: "no budget declared"}[usage.get("held")]
        lines.append(
            f"Run total: {usage['wall_hours']:.3f} wall hours, {usage['gpu_hours']:.3f} GPU-hours, at most "
            f"{usage['max_gpus']} GPU(s) in a stage (training attempts from budget/ledger.jsonl, retries "
            f"included; other stages from their provenance). Budget: "
            + (
                f"{', '.join(f'{k} {v}' for k, v in budget.items() if v is not None and k != 'source')} "
                f"({budget.get('source', '')}): {held}"
                if budget
                else held
            )
            + (". " + "; ".join(usage["overruns"]) if usage.get("overruns") else "")
            + "."
        )
        lines.append("")
    lines += [
        "## Scores vs the paper",
        "",
        "| task | suite | score ± se | n | paper | Δ | bound | reproduced |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, task in sorted(entry["tasks"].items()):
        if task["status"] != "ok":
            lines.append(
                f"| {name} | {task.get('suite', '')} | skipped: {task.get('reason', '')} | | "
                f"{_num(task.get('published'))} | | | |"
            )
            continue
        v = task.get("verdict")
        lines.append(
            f"| {name} | {task.get('suite', '')} | {_num(task['value'])} ± {_num(task.get('stderr'))} | "
            f"{task.get('n') or '—'} | {_num(task.get('published'))} | "
            f"{_num(task.get('delta_vs_published'))} | {_num(v['bound']) if v else '—'} | {mark(v) or '—'} |"
        )
    average = verdict.get("average")
    declared = entry.get("average_as_published")
    if declared:  # the paper's own average (config averages:), recomputed from the tasks it counts
        missing = ", ".join(m["task"] for m in declared.get("missing", []))
        lines.append(
            f"| **{declared['name']}** (paper's average) | {declared.get('suite', '')} | "
            f"{_num(declared['value']) if declared['value'] is not None else 'incomplete: ' + missing} | | "
            f"{_num(declared['published'])} | {_num(declared['delta'])} | "
            f"{_num(average['bound']) if average else '—'} | {mark(average) or '—'} |"
        )
    lines.append(f"| mean of the tasks that ran | | {_num(entry.get('average'))} | | | | | |")
    lines += [
        "",
        f"Verdict rule: {RULE} (combined se = sqrt(se_run² + se_paper²); the papers publish no standard "
        "errors). Tolerances per suite (config.yaml `tolerances:`, config/tolerances.json):",
    ]
    tolerances = contents.json("config/tolerances.json") if "config/tolerances.json" in contents.members else {}
    lines += [f"- {suite}: {t['points']} ({t['justification']})" for suite, t in sorted(tolerances.items())]
    contamination = prov.get("contamination")
    if contamination:
        lines += [
            "",
            f"Contamination gate: {contamination['flagged_rows']} training rows flagged against "
            f"{contamination['eval_items']} eval items, action `{contamination['action']}` "
            "(data/contamination.json).",
        ]
    lines += [
        "",
        "## Check it",
        "",
        "```",
        "make check BUNDLE=<this archive>                # hashes, schema, config, budget, hardware",
        "make check BUNDLE=<this archive> MODEL=<final model dir> [TASKS=a,b]   # + re-run the evaluation",
        "```",
        "",
        "Every member's sha256 is in MANIFEST.json; models/*.json hold the model directories' file "
        "hashes (weights are included only in bundles made with --with-weights).",
        "",
    ]
    return "\n".join(lines)
