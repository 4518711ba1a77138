"""The recipes the project promises (issue: every published recipe dry-runs; three tiny twins run here)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = ROOT / "config.yaml"

PUBLISHED_RECIPES = [
    "tulu2-7b",
    "tulu2-13b",
    "tulu2-70b",
    "tulu2-dpo-7b",
    "tulu2-dpo-13b",
    "tulu2-dpo-70b",
    "tulu2-qlora-7b",
    "tulu2-qlora-13b",
    "tulu2-qlora-70b",
    "codetulu2-7b",
    "codetulu2-13b",
    "codetulu2-34b",
    "platypus2-13b",
    "platypus2-70b",
    "camel-platypus2-13b",
    "stable-platypus2-13b",
    "openorca-platypus2-13b",
    "birbal-7b",
    "birbal-7b-400k",
    "birbal-7b-700k",
    "birbal-7b-released",
]
# tiny twin -> the published recipe it extends
TINY_TWINS = {"tiny-tulu2-dpo": "tulu2-dpo-7b", "tiny-platypus2": "platypus2-13b", "tiny-birbal": "birbal-7b"}
# tiny recipes built from other tiny twins' outputs (Platypus-style merges) -> the twin they extend
TINY_MERGES = {"tiny-platypus2-merged": "tiny-platypus2"}
