"""The tiny twin built once per test session by a real Snakemake run (every stage, reduced size), shared by the
end-to-end checks of its outputs (test_pipeline.py) and of the reproduction kit on it (test_reproduction_kit.py:
bundle, check, `snakemake --report`), so they add no training run of their own."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from workflow_copy import SNAKEMAKE, copy_workflow

RECIPE = "tiny-e2e"
# `published` (a planted score), `budget:` and the tolerance-free suite give REPRODUCTION.md a verdict and a budget
# to report; the score the paper "published" is not the run's, so the verdict follows from the measured numbers.
OVERLAY = """
suites:
  tiny-e2e:
    - {name: heldout_exact, harness: lm-eval, lm_eval_task: menagerie_exact, dataset: tiny-eval, limit: 24,
       max_new_tokens: 24, published_key: heldout}
    - {name: humaneval_pass1, harness: humaneval, chat_format: false, limit: 2, max_new_tokens: 32, metric: pass@1}
recipes:
  tiny-e2e:
    extends: tiny-tulu2-dpo
    data:
      sft: {sources: [{dataset: tiny-sft, count: 48}, {dataset: tiny-units-sft, count: 16}], validation: 8}
      dpo: {sources: [{dataset: tiny-prefs, count: 16}], validation: 4}
    stages:
      sft: {max_steps: 3, global_batch_size: 4, micro_batch_size: 4, max_seq_length: 64}
      dpo: {max_steps: 2, eval_steps: 2, global_batch_size: 4, micro_batch_size: 4, max_seq_length: 64}
    eval: {suites: [tiny-e2e]}
    published: {source: "a planted paper (tests/e2e/conftest.py)", metrics: {heldout: 50.0}}
    budget: {wall_hours: 6, gpus: 0, source: "a planted challenge rule: 6 wall hours, CPU only"}
"""


@dataclass
class Twin:
    work: Path  # the project copy the build ran in
    env: dict
    command: list[str]  # the Snakemake command line of the build
    run: subprocess.CompletedProcess

    def logs(self) -> str:
        return "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in sorted((self.work / "logs").rglob("*.log")))


@pytest.fixture(scope="session")
def tiny_twin(tmp_path_factory) -> Twin:
    """`make run` of the tiny-e2e twin in a scratch copy (snakemake --configfile e2e.yaml --config recipe=tiny-e2e)."""
    work = copy_workflow(tmp_path_factory.mktemp("twin") / "project", share_downloads=True)
    (work / "e2e.yaml").write_text(OVERLAY)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [str(SNAKEMAKE), "--cores", "2", "--configfile", "e2e.yaml", "--config", f"recipe={RECIPE}"]
    run = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1400)
    return Twin(work, env, cmd, run)


@pytest.fixture
def built_twin(tiny_twin) -> Twin:
    """The twin, failing the test that asks for it (with the logs) when the build failed."""
    assert tiny_twin.run.returncode == 0, tiny_twin.run.stderr[-4000:] + tiny_twin.logs()
    return tiny_twin
