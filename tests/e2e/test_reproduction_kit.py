"""The reproduction kit on the tiny twin (tests/e2e/conftest.py's session build; no training of its own): what
`make run && make bundle && make check BUNDLE=…` does, REPRODUCTION.md as an organiser reads it, the GPUs the
bundle records per stage against a rule that names one, and `make report` (snakemake --report) looked at in headless
Chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from menagerie.bundle import read_bundle
from menagerie.check import check_bundle
from menagerie.config import load_config
from workflow_copy import ROOT

RECIPE = "tiny-e2e"
PUBLISHED_HELDOUT = 50.0  # conftest's planted paper
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
requires_chromium = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="chromium is not installed (apt-get install chromium); with CI=true this test fails instead of skipping",
)


def make(twin, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """The project's Makefile target in the twin's directory, with this interpreter (no venv sync: -o env)."""
    if not (twin.work / "Makefile").exists():
        shutil.copy(ROOT / "Makefile", twin.work / "Makefile")
    return subprocess.run(
        # --no-print-directory: under `make test` (MAKELEVEL 1) make would add "Entering/Leaving directory" lines
        ["make", "--no-print-directory", "-o", ".venv/.synced", "-o", "env", f"PY={sys.executable}", *args],
        cwd=twin.work,
        env=twin.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def bundle_of(twin) -> Path:
    """`make bundle` once per session (the acceptance test and the hardware test read the same bundle)."""
    if not hasattr(bundle_of, "path"):
        built = make(twin, "bundle", f"RECIPE={RECIPE}", "CONFIGFILES=e2e.yaml")
        assert built.returncode == 0, built.stdout + built.stderr
        bundle_of.path = twin.work / re.search(r"^bundle: (\S+\.tar\.gz)", built.stdout, re.M).group(1)
    return bundle_of.path


def stage_rows(page: str) -> dict[str, list[str]]:
    """REPRODUCTION.md's "What ran" table: stage -> [hardware, wall time, notes], in the order of the page."""
    section = page.split("## What ran, on what, for how long")[1].split("\n\n")[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()[2:]]
    return {row[0]: row[1:] for row in rows}


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_make_bundle_and_check_pass_on_the_twin_and_its_page_reads_right(built_twin):
    work = built_twin.work
    bundle = bundle_of(built_twin)
    assert bundle.parent == work / "results" / RECIPE / "bundle" and bundle.name.startswith(f"{RECIPE}-")

    members = read_bundle(bundle).members
    page, entry = members["REPRODUCTION.md"].decode(), json.loads(members["eval.json"])
    usage = json.loads(members["budget/usage.json"])
    # the verdict as the rule gives it from the measured numbers (no tolerance declared for the suite)
    held = entry["tasks"]["heldout_exact"]
    delta = held["value"] - PUBLISHED_HELDOUT
    reproduced = abs(delta) <= 2 * held["stderr"]

    # the organiser: hashes, schema, config, budget, hardware, and the evaluation re-run on the final model
    checked = make(
        built_twin,
        "check",
        f"BUNDLE={bundle}",
        "CONFIGFILES=e2e.yaml",
        f"MODEL=results/{RECIPE}/dpo",
        "TASKS=heldout_exact",
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    # a verdict of "not reproduced" is reported as a warning: the check is of the bundle, not of the paper
    assert lines[-1] == f"check {bundle}: passed (0 failed, {0 if reproduced else 1} warnings)", checked.stdout
    passed = {line.split(":")[0].split()[1] for line in lines if line.startswith("OK ")}
    assert passed >= {"integrity", "schema", "scores", "config", "models", "budget", "hardware", "model", "rerun"}, (
        checked.stdout
    )
    verdict_line = f"overall verdict against the paper: {'reproduced' if reproduced else 'not_reproduced'}"
    assert any(line.endswith(verdict_line) for line in lines), checked.stdout

    # REPRODUCTION.md: scores vs the paper with the verdict
    assert page.splitlines()[0] == f"# Reproduction of `{RECIPE}`: {'REPRODUCED' if reproduced else 'NOT REPRODUCED'}"
    assert (
        f"| heldout_exact | tiny-e2e | {held['value']:.2f} ± {held['stderr']:.2f} | 24 | 50.00 | {delta:.2f} | "
        f"{2 * held['stderr']:.2f} | {'✓' if reproduced else '✗'} |"
    ) in page
    human = entry["tasks"]["humaneval_pass1"]
    assert f"| humaneval_pass1 | tiny-e2e | {human['value']:.2f} ± {human['stderr']:.2f} | 2 | — | — | — | — |" in page
    assert "- **Paper**:" in page and "published scores: a planted paper (tests/e2e/conftest.py)" in page
    assert "a tiny twin (CPU stand-in), not the published scale" in page
    # what ran, on what, for how long: every stage, in the order it ran, on this machine's CPU
    stages = stage_rows(page)
    # in the order they ran (the base evaluation may run before or beside SFT); full fine-tuning: no merges
    assert set(stages) == {"sft", "dpo", "eval base", "eval start", "eval final"}, stages
    order = list(stages)
    assert order.index("sft") < order.index("dpo") < order.index("eval final"), stages
    assert order.index("sft") < order.index("eval start"), stages
    assert all(hardware.startswith("CPU only (") for hardware, _, _ in stages.values()), stages
    assert all(re.fullmatch(r"\d+\.\d min", wall) for _, wall, _ in stages.values()), stages
    assert stages["sft"][2] == "3 steps" and stages["dpo"][2] == "2 steps"
    # the budget: what the run used, against the planted rule, held
    assert usage["held"] is True and usage["wall_hours"] < 6
    assert f"Run total: {usage['wall_hours']:.3f} wall hours, 0.000 GPU-hours, at most 0 GPU(s) in a stage" in page
    budget = page.split("Budget: ")[1].split("\n")[0]
    assert budget.endswith("(a planted challenge rule: 6 wall hours, CPU only): **held**.") and {
        "wall_hours 6",
        "gpus 0",
    } <= set(budget.split(" (")[0].split(", ")), budget
    assert "Contamination gate:" in page and "make check BUNDLE=<this archive>" in page


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_bundle_records_the_hardware_of_each_stage_and_a_gpu_rule_judges_it(built_twin):
    """Hardware equivalence on a real run: the bundle holds what each stage saw (no GPU here); a gpu_model declared
    on a stage is a warning, the same GPU named by the budget (the challenge's rule) fails every stage run without it."""
    bundle = bundle_of(built_twin)
    members = read_bundle(bundle).members
    records = {
        n: json.loads(members[n]) for n in members if n.startswith("provenance/") and n.endswith("provenance.json")
    }
    stages = {n.split("/")[1] for n in records}
    assert {"sft", "dpo", "eval"} <= stages and not [s for s in stages if s.endswith("_merged")], sorted(records)
    assert all(r["environment"]["hardware"]["gpus"] == [] for r in records.values())

    config = load_config(built_twin.work / "config.yaml", built_twin.work / "e2e.yaml")
    recipe = config["recipes"][RECIPE]
    recipe["stages"]["sft"]["resources"]["gpu_model"] = "rtx4090_24gb"
    hardware = [(f.level, f.message) for f in check_bundle(bundle, config) if f.check == "hardware"]
    assert hardware == [("warn", "stage sft ran on no GPU; the recipe declares rtx4090_24gb")]
    recipe["budget"]["gpu_model"] = "rtx4090_24gb"
    hardware = [(f.level, f.message) for f in check_bundle(bundle, config) if f.check == "hardware"]
    assert len(hardware) == len(records) and all(
        level == "fail" and m.endswith("ran on no GPU; the budget names rtx4090_24gb") for level, m in hardware
    ), hardware
    assert {m.split()[1] for _, m in hardware} == stages


def chromium_dom(html: Path, out: Path) -> str:
    """The DOM of `html` after headless Chromium ran its scripts (10 s of virtual time)."""
    if CHROMIUM is None:
        pytest.fail("CI=true but chromium is not installed: add it to the apt-get install line of .ci/run")
    run = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={out / 'chromium-profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            html.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


# A reader's clicks, added to a copy of the report: the category in the menu, then the view button of the result
# whose row holds `row` (the first button of its last cell). Chromium runs them in virtual time; the DOM it dumps
# holds what the content pane then shows (an <img> or an <iframe>, with the result as a data: URI).
CLICKS = """
<script>
window.addEventListener("load", function () {
  function link(text) {
    return Array.from(document.querySelectorAll("a")).find(function (a) { return a.textContent.trim() === text; });
  }
  setTimeout(function () {
    link(%(category)s).click();
    setTimeout(function () {
      var row = Array.from(document.querySelectorAll("tbody tr")).find(function (tr) {
        return tr.textContent.indexOf(%(row)s) >= 0; });
      row.querySelector("td:last-child a").click();
    }, 1000);
  }, 1000);
});
</script>
"""


def shown(report: Path, tmp_path: Path, category: str, row: str) -> tuple[str, bytes]:
    """(tag, bytes) of what the report's content pane shows after clicking `category`, then the result `row`."""
    clicked = tmp_path / f"clicked-{category}-{row}.html"
    head, body_end, tail = report.read_text().rpartition("</body>")  # the page's own end (scripts hold others)
    clicked.write_text(head + CLICKS % {"category": json.dumps(category), "row": json.dumps(row)} + body_end + tail)
    dom = chromium_dom(clicked, tmp_path)
    pane = dom.split("</nav>")[-1]  # the content pane, after the menu (whose logo is an <img> too)
    match = re.search(r'<(img|iframe)[^>]* src="data:([^;"]+);(?:[^;",]+;)*base64,([^"]+)"', pane)
    assert match, f"nothing shown after clicking {category} / {row}: {dom[-3000:]}"
    return match.group(1) + " " + match.group(2), base64.b64decode(match.group(3))


@requires_chromium
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_make_report_shows_the_loss_curves_and_the_leaderboard_in_chromium(built_twin, tmp_path):
    work = built_twin.work
    made = make(built_twin, "report", f"RECIPE={RECIPE}", "CONFIG=e2e.yaml")
    assert made.returncode == 0, made.stdout + made.stderr
    report = work / "results" / RECIPE / "report.html"
    assert f"report: results/{RECIPE}/report.html" in made.stdout and report.is_file()

    dom = chromium_dom(report, tmp_path)  # the page as it opens: the menu lists the result categories
    menu = re.findall(r"<a [^>]*>(?:<svg.*?</svg>)?<span[^>]*>([^<]+)</span></a>", dom)
    assert {"Workflow", "Training", "Leaderboard"} <= set(menu), menu
    for stage in ("sft", "dpo"):
        assert shown(report, tmp_path, "Training", stage) == (
            "img image/png",
            (work / "results" / RECIPE / stage / "loss_curve.png").read_bytes(),
        )
    tag, page = shown(report, tmp_path, "Leaderboard", "leaderboard")
    assert tag == "iframe text/html" and page == (work / "results" / "leaderboard.html").read_bytes()
    assert f'data-recipe="{RECIPE}"'.encode() in page
    tag, chart = shown(report, tmp_path, "Leaderboard", "chart of suite")
    assert tag == "img image/png" and chart == (work / "results" / "leaderboard" / f"{RECIPE}.png").read_bytes()


def test_make_report_before_a_build_is_one_sentence(tmp_path):
    from workflow_copy import copy_workflow

    work = copy_workflow(tmp_path / "project")
    shutil.copy(ROOT / "Makefile", work / "Makefile")
    run = subprocess.run(
        ["make", "-o", ".venv/.synced", "-o", "env", f"PY={sys.executable}", "report", "RECIPE=tiny-birbal"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert (
        "error: results/tiny-birbal/eval.json does not exist: the report shows a built run, build it first "
        "(`make run RECIPE=tiny-birbal`)" in run.stderr
    ), run.stdout + run.stderr
