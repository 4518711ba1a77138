"""results/leaderboard.html and results/leaderboard/<suite>.png from three schema-valid eval.json files (built with
menagerie.report), checked as files and as Chromium renders them (headless, --dump-dom and --screenshot)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from menagerie.config import load_config
from menagerie.leaderboard import write_leaderboard
from menagerie.leaderboard_html import contamination_text, render_html
from menagerie.report import build_eval_entry

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = '<script>alert("x")</script> & "quotes"'

requires_chromium = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="chromium is not installed (apt-get install chromium); with CI=true this test fails instead of skipping",
)


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config(ROOT / "config.yaml")


def metrics(tasks: dict) -> dict:
    return {
        "recipe": "x",
        "which": "final",
        "model": "m",
        "backend": "hf",
        "dtype": "float32",
        "batch_size": 16,
        "seed": 1234,
        "chat_format": "tulu",
        "chat_template_sha256": "0" * 64,
        "tasks": tasks,
    }


def ok(value: float, stderr: float | None, metric: str = "exact_match", n: int = 200) -> dict:
    return {"status": "ok", "harness": "lm-eval", "metric": metric, "value": value, "stderr": stderr, "n": n}


def skipped(reason: str) -> dict:
    return {"status": "skipped", "reason": reason}


def contamination_stage_files(tmp: Path) -> dict[str, Path]:
    """A mixture report and the gate's contamination.json beside it (what report._contamination_summary reads)."""
    data = tmp / "data"
    data.mkdir(parents=True)
    (data / "sft_report.json").write_text(json.dumps({"sha256": {"train": "b" * 64}}))
    (data / "contamination.json").write_text(
        json.dumps(
            {
                "summary": {
                    "action": "drop",
                    "methods": ["ngram", "cosine"],
                    "ngram": 13,
                    "cosine": 0.8,
                    "guard": True,
                    "eval_items": 216,
                    "eval_tasks": ["heldout_exact"],
                    "unchecked_tasks": ["humaneval_pass1"],
                    "flagged_rows": 3,
                    "parts": {
                        "sft": {
                            "train_rows": 64,
                            "flagged_rows": 3,
                            "kept_rows": 61,
                            "by_method": {"ngram": 2, "cosine": 1},
                            "by_task": {"heldout_exact": 3},
                        }
                    },
                    "examples": [
                        {
                            "part": "sft",
                            "row": 7,
                            "train_id": "r7",
                            "methods": ["ngram"],
                            "method": "ngram",
                            "kind": "question",
                            "eval_task": "heldout_exact",
                            "eval_id": "e3",
                            "score": 1.0,
                            "threshold": 0.2,
                            "train_excerpt": "Intro <b>. What is 23 plus 58? Thanks",
                            "train_spans": [[11, 29]],
                            "eval_text": "What is 23 plus 58?",
                            "eval_spans": [[0, 18]],
                        }
                    ],
                },
                "sha256": {"sft": "d" * 64},
            }
        )
    )
    return {"data.sft": data / "sft_report.json"}


@pytest.fixture
def board(config, tmp_path) -> dict:
    """Three recipes on two suites: tiny (no paper numbers, one with a contamination report, one task skipped with
    a reason full of markup) and openllm-v1 (paper numbers, deltas)."""
    results = tmp_path / "results"
    tiny_base = metrics({"heldout_exact": ok(22.0, 2.9), "humaneval_pass1": ok(12.5, 8.5, "pass@1", 16)})
    entries = {
        "tiny-tulu2-dpo": build_eval_entry(
            config,
            "tiny-tulu2-dpo",
            metrics({"heldout_exact": ok(60.0, 3.5), "humaneval_pass1": skipped(EVIL)}),
            tiny_base,
            contamination_stage_files(tmp_path / "stages"),
            "results/tiny-tulu2-dpo/dpo",
        ),
        "tiny-platypus2": build_eval_entry(
            config,
            "tiny-platypus2",
            metrics({"heldout_exact": ok(75.0, 3.0), "humaneval_pass1": ok(12.5, 8.5, "pass@1", 16)}),
            None,
            {},
            "results/tiny-platypus2/sft_merged",
        ),
        "platypus2-13b": build_eval_entry(
            config,
            "platypus2-13b",
            metrics(
                {
                    "arc_challenge_25shot": ok(60.1, 1.4, "acc_norm"),
                    "hellaswag_10shot": ok(81.9, 0.4, "acc_norm"),
                    "mmlu_5shot": ok(55.2, 0.4, "acc"),
                    "truthfulqa_mc2_0shot": skipped("lm-eval task 'truthfulqa_mc2' could not run here"),
                }
            ),
            None,
            {},
            "results/platypus2-13b/sft_merged",
        ),
    }
    files = []
    for name, entry in entries.items():
        path = results / name / "eval.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(entry))
        files.append(path)
    # platypus2-13b also has its Open LLM Leaderboard v1 file: the page links it
    (results / "platypus2-13b" / "openllm_v1").mkdir()
    (results / "platypus2-13b" / "openllm_v1" / "results.json").write_text("{}")
    out = {
        "json": results / "leaderboard.json",
        "md": results / "leaderboard.md",
        "html": results / "leaderboard.html",
        "charts": results / "leaderboard",
    }
    rows = write_leaderboard(files, out["json"], out["md"], out["html"], out["charts"])
    return {"rows": rows, "entries": entries, **out}


class DomRows(HTMLParser):
    """The rows, images, links and scripts of a (rendered) page."""

    def __init__(self):
        super().__init__()
        self.summary: list[str] = []
        self.suite_rows: dict[str, list[str]] = {}
        self.images: list[dict] = []
        self.links: list[str] = []
        self.scripts = 0
        self.body: dict = {}
        self._suite: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "table" and "suite-table" in (a.get("class") or ""):
            self._suite = a["data-suite"]
            self.suite_rows[self._suite] = []
        elif tag == "tr" and a.get("class") == "recipe-row":
            self.summary.append(a["data-recipe"])
        elif tag == "tr" and a.get("class") == "suite-row":
            self.suite_rows[self._suite].append(a["data-recipe"])
        elif tag == "img":
            self.images.append(a)
        elif tag == "a":
            self.links.append(a["href"])
        elif tag == "script":
            self.scripts += 1


def parse(html: str) -> DomRows:
    parser = DomRows()
    parser.feed(html)
    return parser


# ------------------------------------------------------------------------------------------- the files


def test_charts_one_png_per_suite(board):
    charts = sorted(p.name for p in board["charts"].iterdir())
    assert charts == ["openllm-v1.png", "tiny.png"]
    for name in charts:
        data = (board["charts"] / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    # the directory was written whole: no temporaries beside it
    assert not [p for p in board["charts"].parent.iterdir() if ".tmp" in p.name]


def test_chart_draws_the_paper_values(config, board):
    """Same rows without paper numbers give a different openllm-v1 chart (the dashed paper lines are drawn)."""
    from menagerie.leaderboard_html import suite_chart, suites

    rows = board["rows"]
    tasks = suites(rows)["openllm-v1"]
    with_paper = suite_chart("openllm-v1", tasks, rows)
    assert with_paper == (board["charts"] / "openllm-v1.png").read_bytes()  # deterministic bytes
    stripped = json.loads(json.dumps(rows))
    for row in stripped:
        for task in row["tasks"].values():
            task["published"] = None
    assert suite_chart("openllm-v1", tasks, stripped) != with_paper


def test_html_is_self_contained_and_escaped(board):
    html = board["html"].read_text()
    dom = parse(html)
    assert dom.summary == [r["recipe"] for r in board["rows"]]  # ranked, one row per recipe
    assert dom.summary == ["platypus2-13b", "tiny-tulu2-dpo", "tiny-platypus2"]  # averages 65.7, 60, 43.75
    assert dom.suite_rows == {"openllm-v1": ["platypus2-13b"], "tiny": ["tiny-tulu2-dpo", "tiny-platypus2"]}
    # no scripts, no external assets: every image is an embedded PNG, the same bytes as results/leaderboard/
    assert dom.scripts == 0
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<link" not in html
    assert len(dom.images) == 2
    for img in dom.images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        png = base64.b64decode(img["src"][len(prefix) :])
        assert png == (board["charts"] / f"{img['data-suite']}.png").read_bytes()
    # the skipped task's reason is escaped text in a title, never markup
    assert "<script>alert" not in html
    assert 'title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;"' in html


def test_html_links_are_relative_and_resolve(board):
    dom = parse(board["html"].read_text())
    base = board["html"].parent
    assert sorted(dom.links) == sorted(
        [f"{r}/eval.json" for r in ("tiny-platypus2", "tiny-tulu2-dpo", "platypus2-13b")]
        + ["platypus2-13b/openllm_v1/results.json"]
    )
    for link in dom.links:
        assert not Path(link).is_absolute() and (base / link).is_file()


def test_html_shows_paper_deltas_and_contamination(board):
    html = board["html"].read_text()
    row = re.search(r'<tr class="suite-row" data-recipe="platypus2-13b">(.*?)</tr>', html, re.S).group(1)
    # arc 60.1 vs the paper's 61.26 ([PL] Table 3); the skipped task still shows the paper's number
    assert "60.1 ± 1.4" in row and "paper 61.26" in row and "Δpaper -1.2" in row
    assert "paper 44.86" in row and "skipped" in row
    summary = re.search(r'<tr class="recipe-row" data-recipe="tiny-tulu2-dpo">(.*?)</tr>', html, re.S).group(1)
    assert "3 of 64 training rows flagged against 216 eval items (action: drop)" in summary
    assert "1 task(s) without local test items unchecked" in summary
    # the gate's matches: the matched text highlighted in the training row and in the item, markup escaped
    assert "Intro &lt;b&gt;. <mark>What is 23 plus 58</mark>? Thanks" in summary
    assert "<mark>What is 23 plus 58</mark>?</p>" in summary and "score 1.0 ≥ 0.2" in summary
    assert "Δbase +38.0" in html
    untested = re.search(r'<tr class="recipe-row" data-recipe="tiny-platypus2">(.*?)</tr>', html, re.S).group(1)
    assert "no gate report" in untested
    top = re.search(r'<tr class="recipe-row" data-recipe="platypus2-13b">(.*?)</tr>', html, re.S).group(1)
    assert "3 of 4 tasks" in top and "[PL] Table 3" in top  # the average leaves the skipped task out
    board_json = json.loads(board["json"].read_text())
    assert board_json["rows"][1]["contamination"]["flagged_rows"] == 3
    assert board_json["rows"][1]["tasks"]["heldout_exact"]["suite"] == "tiny"


def test_contamination_text():
    assert contamination_text(None) == "no gate report"
    text = contamination_text(
        {
            "action": "warn",
            "flagged_rows": 0,
            "eval_items": 5,
            "parts": {"sft": {"train_rows": 10}, "dpo": {"train_rows": 7}},
        }
    )
    assert text == "0 of 17 training rows flagged against 5 eval items (action: warn)"


def test_empty_leaderboard(tmp_path):
    rows = write_leaderboard([], tmp_path / "l.json", tmp_path / "l.md", tmp_path / "l.html", tmp_path / "charts")
    assert rows == [] and list((tmp_path / "charts").iterdir()) == []
    assert "No recipe has been built yet" in (tmp_path / "l.html").read_text()
    assert render_html([], {}).startswith("<!DOCTYPE html>")


def test_eval_json_without_suites_still_renders(board, tmp_path):
    """eval.json files written before tasks recorded their suite land in the suite 'other'."""
    entry = json.loads(json.dumps(board["entries"]["tiny-platypus2"]))
    for task in entry["tasks"].values():
        del task["suite"]
    path = tmp_path / "old" / "eval.json"
    path.parent.mkdir()
    path.write_text(json.dumps(entry))
    write_leaderboard([path], tmp_path / "l.json", tmp_path / "l.md", tmp_path / "l.html", tmp_path / "charts")
    assert [p.name for p in (tmp_path / "charts").iterdir()] == ["other.png"]


# ------------------------------------------------------------------------------------------- Chromium

IMAGE_CHECK = """<script>
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-images-decoded",
    String(images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length));
  document.body.setAttribute("data-image-widths", images.map(function (i) { return i.naturalWidth; }).join(","));
});
</script>"""


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.fail("CI=true but chromium is not installed: add it to the apt-get install line of .ci/run")
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={cwd / 'chromium-profile'}",
        *args,
    ]
    run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_MAGIC)
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@requires_chromium
def test_chromium_renders_every_row_and_loads_the_images(board, tmp_path):
    # the page plus a test-only script (the page itself has none) that records, after load, how many images the
    # browser decoded; the copy sits beside the page so its relative links behave the same
    page = board["html"]
    checked = page.with_name("leaderboard.checked.html")
    checked.write_text(page.read_text().replace("</body>", IMAGE_CHECK + "\n</body>"))
    run = chromium("--virtual-time-budget=5000", "--dump-dom", checked.as_uri(), cwd=tmp_path)
    dom = parse(run.stdout)
    assert dom.summary == [r["recipe"] for r in board["rows"]]
    assert dom.suite_rows == {"openllm-v1": ["platypus2-13b"], "tiny": ["tiny-tulu2-dpo", "tiny-platypus2"]}
    assert dom.body.get("data-images") == "2"
    assert dom.body.get("data-images-decoded") == "2", dom.body
    widths = sorted(int(w) for w in dom.body["data-image-widths"].split(","))
    assert widths == sorted(png_size((board["charts"] / n).read_bytes())[0] for n in ("tiny.png", "openllm-v1.png"))
    assert dom.scripts == 1  # only the injected one: the markup in a reason stayed text
    assert EVIL in run.stdout.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").replace("&quot;", '"')


@requires_chromium
def test_chromium_screenshot_is_not_blank(board, tmp_path):
    shot = tmp_path / "page.png"
    chromium(
        "--window-size=1400,1800", "--hide-scrollbars", f"--screenshot={shot}", board["html"].as_uri(), cwd=tmp_path
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (1800, 1400)
    colours = {tuple(p) for p in (pixels[::7, ::7].reshape(-1, 3) * 255).round().astype(int).tolist()}
    assert len(colours) > 20  # text, table borders, the charts' bar colours
    # the tab10 blue of the first task's bars is on screen (the charts were drawn, not just their alt text)
    assert any(abs(r - 31) < 12 and abs(g - 119) < 12 and abs(b - 180) < 12 for r, g, b in colours)
