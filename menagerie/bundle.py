"""A reproduction bundle: one archive per built recipe that holds everything needed to judge and re-check the run.

`make bundle RECIPE=<name>` -> results/<recipe>/bundle/<recipe>-<short commit>.tar.gz with, under <recipe>-<commit>/:

  eval.json                       the scores, deltas and verdicts (schemas/eval.schema.json)
  config/recipe.json              the resolved recipe and what it references (config.recipe_payload; its hash is
                                  eval.json's provenance.config_hash); config/tolerances.json the verdict tolerances
  provenance/<path>               every stage's provenance.json; provenance/eval/<role>/metrics(.provenance).json the
                                  shared evaluations eval.json links (results/evals/<model key>/<suite hash>/)
  logs/<stage>.log                the Snakemake log of every stage (logs/<recipe>/; logs/eval/<role>/ the evaluations')
  lm_eval/<role>/...              lm-eval's native results files of each evaluation (final, base, start)
  data/                           the contamination report and the data mixture reports
  models/<dir>.json               sha256 of every file of each model directory (the weights themselves only with
                                  --with-weights, under models/<dir>/), plus the directory hash provenance uses
  models/<dir>/                   the model directories' small non-weight files (trainer log, loss curve, card, configs)
  environment/uv.lock             the environment lock; environment/containers.json the images and their digests
  budget/                         the budget ledger (every training attempt) and the usage summed over the run
  slurm/sacct.txt                 SLURM accounting of the job ids provenance records (when there are any and sacct
                                  runs here)
  REPRODUCTION.md                 one page generated from the above
  MANIFEST.json                   sha256 and size of every other member

The archive is written to a temporary file and moved into place (atomic); zstd is not in the locked environment, so
it is gzip.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from menagerie.config import recipe_hash, recipe_payload
from menagerie.errors import MenagerieError
from menagerie.io import atomic_open, sha256_file
from menagerie.provenance import file_hashes
from menagerie.verdict import suite_tolerance
from menagerie.workflow import RecipePaths

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack", ".onnx")
SMALL_FILE_BYTES = 1 << 20  # model-directory files bundled without --with-weights: non-weights up to 1 MiB
MANIFEST = "MANIFEST.json"
REPRODUCTION = "REPRODUCTION.md"


@dataclass
class Contents:
    """Members of a bundle: archive name -> bytes (generated) or a path on disk (copied)."""

    members: dict[str, bytes | Path] = field(default_factory=dict)

    def add_file(self, name: str, path: Path) -> None:
        if path.is_file():
            self.members[name] = path

    def add_tree(self, prefix: str, root: Path, keep=lambda p: True) -> None:
        if root.is_dir():
            for path in sorted(p for p in root.rglob("*") if p.is_file() and keep(p)):
                self.members[f"{prefix}/{path.relative_to(root).as_posix()}"] = path

    def add_json(self, name: str, obj) -> None:
        self.members[name] = (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()

    def data(self, name: str) -> bytes:
        value = self.members[name]
        return value if isinstance(value, bytes) else Path(value).read_bytes()

    def json(self, name: str):
        return json.loads(self.data(name))


def short_commit(git_commit: str) -> str:
    commit = git_commit.removesuffix("-dirty")
    return commit[:7] + ("-dirty" if git_commit.endswith("-dirty") else "") if commit != "unknown" else "unknown"


def model_directories(config: dict, recipe: str) -> dict[str, str]:
    """Label -> model directory of every model the build made or read (base model, each stage, its merge)."""
    paths = RecipePaths(config)
    dirs = {"base": paths.base_model(recipe)}
    for stage in paths.training_stages(recipe):
        dirs[stage] = paths.stage_dir(recipe, stage)
        if paths.is_adapter(recipe, stage):
            dirs[f"{stage}_merged"] = paths.merged_dir(recipe, stage)
    final = paths.final_model(recipe)
    if final not in dirs.values():
        dirs["final"] = final
    return dirs


def model_record(path: Path) -> dict:
    """sha256 and size of every file of a model directory, and the directory hash provenance records use."""
    files = {
        p.relative_to(path).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }
    return {"path": str(path), "tree_sha256": file_hashes({"d": path}).get("d"), "files": files}


def is_weight(path: Path) -> bool:
    return path.name.endswith(WEIGHT_SUFFIXES)


def slurm_job_ids(records: list[dict]) -> list[str]:
    """Job ids recorded in provenance: any `job_id` / `slurm_job_id` / `SLURM_JOB_ID` value under a SLURM key."""
    found: list[str] = []

    def walk(value, under_slurm: bool) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                slurmish = under_slurm or "slurm" in str(key).lower()
                if slurmish and str(key).lower() in ("job_id", "slurm_job_id", "jobid") and item not in (None, ""):
                    found.append(str(item))
                walk(item, slurmish)
        elif isinstance(value, list):
            for item in value:
                walk(item, under_slurm)

    for record in records:
        walk(record, False)
    return list(dict.fromkeys(found))


SACCT_FORMAT = "JobID,JobName,Partition,AllocTRES,NNodes,Elapsed,State,ExitCode,Start,End,MaxRSS"


def sacct_accounting(job_ids: list[str]) -> str | None:
    """`sacct` of the job ids (parsable, one line per job step), None when there are none or sacct is absent."""
    if not job_ids or not shutil.which("sacct"):
        return None
    try:
        run = subprocess.run(
            ["sacct", "-P", "-j", ",".join(job_ids), f"--format={SACCT_FORMAT}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"# sacct failed: {exc}\n"
    return run.stdout if run.returncode == 0 else f"# sacct exited {run.returncode}: {run.stderr.strip()}\n"


def container_digests(config: dict, records: list[dict], root: Path) -> dict:
    """The images config.yaml names (with the sha256 of a local .sif) and the digests stages ran in."""
    images = {}
    for stage, image in (config.get("containers") or {}).items():
        if not image:
            continue
        entry = {"image": image}
        local = root / image
        if "://" not in image and local.is_file():
            entry["sha256"] = sha256_file(local)
        images[stage] = entry
    ran = sorted({r.get("environment", {}).get("container") for r in records} - {None})
    return {"configured": images, "ran_in": ran}


def collect(root: Path, config: dict, recipe: str, with_weights: bool = False) -> Contents:
    """Every member of `recipe`'s bundle but MANIFEST.json (root: the project directory holding results/)."""
    from menagerie.report import validate_eval
    from menagerie.train.budget import run_usage

    recipe_dir = root / "results" / recipe
    eval_path = recipe_dir / "eval.json"
    if not eval_path.is_file():
        raise MenagerieError(f"{eval_path} does not exist; build the recipe first (make run RECIPE={recipe})")
    entry = json.loads(eval_path.read_text())
    validate_eval(entry, str(eval_path))
    if entry["provenance"]["config_hash"] != recipe_hash(config, recipe):
        raise MenagerieError(
            f"{eval_path} was built from another version of recipe '{recipe}' (config_hash "
            f"{entry['provenance']['config_hash']}, the config now gives "
            f"{recipe_hash(config, recipe)}); rebuild it (make run RECIPE={recipe}) or bundle with "
            "the config the run used (CONFIGFILES=...)"
        )
    contents = Contents()
    contents.add_file("eval.json", eval_path)
    contents.add_json("config/recipe.json", {"name": recipe, **recipe_payload(config, recipe)})
    contents.add_json(
        "config/tolerances.json", {s: suite_tolerance(config, s) for s in config["recipes"][recipe]["eval"]["suites"]}
    )
    records = []
    for path in sorted(recipe_dir.glob("*/provenance.json")):
        contents.add_file(f"provenance/{path.relative_to(recipe_dir).as_posix()}", path)
        records.append(json.loads(path.read_text()))
    # the shared evaluations eval.json read (results/evals/<model key>/<suite hash>/), under eval/<role>/ as before
    evaluations = {role: root / link["path"] for role, link in entry.get("evaluations", {}).items()}
    for role, metrics in evaluations.items():
        if sha256_file(metrics) != entry["evaluations"][role]["sha256"]:
            raise MenagerieError(
                f"{metrics} changed after {eval_path} was written (its sha256 is not the one "
                f"eval.json links); rebuild the recipe (make run RECIPE={recipe})"
            )
        for path in (metrics, metrics.with_suffix(".provenance.json")):
            contents.add_file(f"provenance/eval/{role}/{path.name}", path)
        records.append(json.loads(metrics.with_suffix(".provenance.json").read_text()))
        contents.add_tree(f"lm_eval/{role}", metrics.parent / "lm_eval")
    contents.add_tree("logs", root / "logs" / recipe, keep=lambda p: p.suffix == ".log")
    for role, metrics in evaluations.items():
        contents.add_tree(
            f"logs/eval/{role}",
            root / "logs" / metrics.parent.relative_to(root / "results"),
            keep=lambda p: p.suffix == ".log",
        )
    contents.add_file("data/contamination.json", recipe_dir / "data" / "contamination.json")
    for report in sorted((recipe_dir / "data").glob("*_report.json")):
        contents.add_file(f"data/{report.name}", report)
    for label, directory in model_directories(config, recipe).items():
        path = root / directory
        if not path.is_dir():
            continue
        contents.add_json(f"models/{label}.json", {**model_record(path), "path": directory})  # as the DAG names it
        keep = (
            (lambda p: True) if with_weights else (lambda p: not is_weight(p) and p.stat().st_size <= SMALL_FILE_BYTES)
        )
        if label != "base" or with_weights:
            contents.add_tree(f"models/{label}", path, keep=keep)
    contents.add_file("environment/uv.lock", root / "uv.lock")
    contents.add_json("environment/containers.json", container_digests(config, records, root))
    ledger = recipe_dir / "budget" / "ledger.jsonl"
    contents.add_file("budget/ledger.jsonl", ledger)
    contents.add_json("budget/usage.json", run_usage(recipe_dir, config["recipes"][recipe], evaluations=evaluations))
    accounting = sacct_accounting(slurm_job_ids(records))
    if accounting is not None:
        contents.members["slurm/sacct.txt"] = accounting.encode()
    from menagerie.reproduction import render_reproduction

    contents.members[REPRODUCTION] = render_reproduction(contents, recipe).encode()
    return contents


def manifest(contents: Contents, recipe: str, git_commit: str, with_weights: bool) -> dict:
    import hashlib

    files = {}
    for name in sorted(contents.members):
        value = contents.members[name]
        if isinstance(value, bytes):
            files[name] = {"sha256": hashlib.sha256(value).hexdigest(), "bytes": len(value)}
        else:
            files[name] = {"sha256": sha256_file(value), "bytes": Path(value).stat().st_size}
    return {
        "bundle_version": 1,
        "recipe": recipe,
        "git_commit": git_commit,
        "with_weights": with_weights,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }


def write_archive(contents: Contents, top: str, out: Path) -> None:
    """A gzip tar of `contents` under `top/`, written atomically; members in sorted order, fixed owner and mode."""
    with atomic_open(out, "wb") as handle, tarfile.open(fileobj=handle, mode="w:gz") as tar:
        for name in sorted(contents.members):
            data = contents.data(name)
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))


def build_bundle(
    root: str | Path, config: dict, recipe: str, out_dir: str | Path | None = None, with_weights: bool = False
) -> Path:
    """Write results/<recipe>/bundle/<recipe>-<short commit>.tar.gz (and its .sha256) and return its path."""
    root = Path(root)
    if recipe not in config["recipes"]:
        raise MenagerieError(f"recipe '{recipe}' is not defined in the config")
    contents = collect(root, config, recipe, with_weights)
    commit = contents.json("eval.json")["provenance"]["git_commit"]
    contents.add_json(MANIFEST, manifest(contents, recipe, commit, with_weights))
    top = f"{recipe}-{short_commit(commit)}"
    out = Path(out_dir or root / "results" / recipe / "bundle") / f"{top}.tar.gz"
    write_archive(contents, top, out)
    with atomic_open(out.with_name(out.name + ".sha256")) as handle:
        handle.write(f"{sha256_file(out)}  {out.name}\n")
    return out


def read_bundle(path: str | Path) -> Contents:
    """The members of a bundle archive (or of an unpacked bundle directory), top directory stripped."""
    path = Path(path)
    contents = Contents()
    if path.is_dir():
        top = path
        for file in sorted(p for p in top.rglob("*") if p.is_file()):
            contents.members[file.relative_to(top).as_posix()] = file.read_bytes()
    elif not path.is_file():
        raise MenagerieError(f"bundle {path} does not exist")
    else:
        _read_archive(path, contents)
    if MANIFEST not in contents.members:
        raise MenagerieError(f"bundle {path} has no {MANIFEST}: not a menagerie bundle")
    return contents


def _read_archive(path: Path, contents: Contents) -> None:
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                name = member.name.split("/", 1)[1] if "/" in member.name else member.name
                contents.members[name] = tar.extractfile(member).read()
    except tarfile.TarError as exc:
        raise MenagerieError(f"bundle {path} is not a readable tar archive ({exc})") from None
