"""Two CPU LoRA SFT runs of the same recipe with the same seed write byte-identical adapter weights.

Reuses tests/test_train.py's fixtures (tiny random Llama, tiny BPE, generated rows)."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")

from test_train import (  # noqa: E402,F401  (fixtures are used by name)
    RECIPE_NAME,
    _single_process,
    base_recipe,
    data_dir,
    make_recipe,
    tiny_model_dir,
)

from menagerie.io import sha256_file  # noqa: E402
from menagerie.train.sft import run_sft  # noqa: E402


@pytest.mark.slow
def test_same_seed_same_adapter_bytes(tmp_path, base_recipe, tiny_model_dir, data_dir):
    recipe = make_recipe(base_recipe)
    digests = []
    for run in ("a", "b"):
        run_sft(
            RECIPE_NAME, recipe, tiny_model_dir, data_dir["sft"], None, tmp_path / run / "sft", tmp_path / run / "w"
        )
        digests.append(sha256_file(tmp_path / run / "sft/adapter_model.safetensors"))
    assert digests[0] == digests[1]
