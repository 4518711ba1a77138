"""An organiser's check of a reproduction bundle (`make check BUNDLE=<path> [MODEL=<dir>] [TASKS=a,b]`).

Each check yields findings (ok / warn / fail, one sentence each):
* integrity: every member hashes to what MANIFEST.json records, and no member is unlisted;
* eval.json follows schemas/eval.schema.json, and its scores are the evaluate stage's (provenance/eval/final);
* the verdicts in eval.json follow from its scores (menagerie.verdict), and the overall verdict is reported;
* config/recipe.json hashes to eval.json's config_hash, and is config.yaml's recipe of that name (else the diff);
* the model files: what the stages recorded as their inputs matches the bundled model hashes;
* the budget held (recomputed from the bundled ledger and provenance against config.yaml's `budget:`);
* hardware: the GPUs each stage saw against the recipe's declared gpu_model (a warning), or the budget's (a failure);
* with MODEL: the model directory is the bundled final model, and a re-run of the evaluation (all tasks, or TASKS)
  agrees with the submitted scores within 2 x their combined standard error.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from menagerie.bundle import MANIFEST, Contents, read_bundle
from menagerie.config import payload_hash, recipe_payload
from menagerie.errors import MenagerieError


@dataclass
class Finding:
    level: str  # ok | warn | fail
    check: str
    message: str

    def line(self) -> str:
        return f"{self.level.upper():4} {self.check}: {self.message}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_integrity(contents: Contents) -> list[Finding]:
    out = []
    try:
        listed = contents.json(MANIFEST)["files"]
    except (KeyError, json.JSONDecodeError, TypeError):
        return [Finding("fail", "integrity", f"{MANIFEST} is not a readable manifest")]
    for name, entry in sorted(listed.items()):
        if name not in contents.members:
            out.append(Finding("fail", "integrity", f"{name} is listed in {MANIFEST} but missing from the bundle"))
            continue
        digest = _sha(contents.data(name))
        if digest != entry["sha256"]:
            out.append(
                Finding(
                    "fail",
                    "integrity",
                    f"{name} was changed after bundling: it hashes to "
                    f"{digest[:12]}…, {MANIFEST} records {entry['sha256'][:12]}…",
                )
            )
    for name in sorted(set(contents.members) - set(listed) - {MANIFEST}):
        out.append(
            Finding("fail", "integrity", f"{name} is in the bundle but not in {MANIFEST} (added after bundling)")
        )
    if not out:
        out.append(Finding("ok", "integrity", f"all {len(listed)} members match {MANIFEST}"))
    return out


def check_eval(contents: Contents) -> list[Finding]:
    from menagerie.report import validate_eval

    entry = contents.json("eval.json")
    try:
        validate_eval(entry, "eval.json")
    except MenagerieError as exc:
        return [Finding("fail", "schema", str(exc))]
    out = [Finding("ok", "schema", "eval.json follows schemas/eval.schema.json")]
    metrics_name = "provenance/eval/final/metrics.json"
    if metrics_name not in contents.members:
        return out + [Finding("warn", "scores", f"{metrics_name} is not in the bundle: scores not cross-checked")]
    measured = contents.json(metrics_name)["tasks"]
    changed = []
    for name, task in sorted(entry["tasks"].items()):
        source = measured.get(name)
        if source is None:
            changed.append(
                Finding("fail", "scores", f"task {name} is in eval.json but the evaluate stage never ran it")
            )
            continue
        for key in ("status", "value", "stderr", "n"):
            if task.get(key) != source.get(key):
                changed.append(
                    Finding(
                        "fail",
                        "scores",
                        f"the {key} of task {name} was changed: eval.json says "
                        f"{task.get(key)}, the evaluate stage's metrics.json says "
                        f"{source.get(key)}",
                    )
                )
    return out + (
        changed or [Finding("ok", "scores", f"eval.json's {len(entry['tasks'])} task scores are the evaluate stage's")]
    )


def check_verdict(contents: Contents, config: dict | None) -> list[Finding]:
    from menagerie.verdict import judge, suite_tolerance

    entry = contents.json("eval.json")
    out = []
    papers = _paper_numbers(config, contents.json("config/recipe.json").get("name")) if config is not None else None
    for name, task in sorted(entry["tasks"].items()):
        recorded = task.get("verdict")
        if papers is not None and name in papers and task.get("published") != papers[name]:
            # the paper's number is the organiser's (config.yaml), not whatever eval.json compares with
            out.append(
                Finding(
                    "fail",
                    "verdict",
                    f"task {name} is compared with published {task.get('published')} "
                    f"in eval.json; config.yaml's paper number is {papers[name]}",
                )
            )
        if not recorded:
            continue
        again = judge(task["value"], task["published"], task.get("stderr"), recorded["tolerance"])
        if again is None or again["reproduced"] != recorded["reproduced"]:
            out.append(
                Finding(
                    "fail",
                    "verdict",
                    f"task {name}'s verdict does not follow from its score: eval.json "
                    f"says reproduced={recorded['reproduced']}",
                )
            )
        if config is not None:
            declared = suite_tolerance(config, task.get("suite"))["points"]
            if declared != recorded["tolerance"]:
                organiser = judge(
                    task["value"],
                    papers.get(name, task["published"]) if papers else task["published"],
                    task.get("stderr"),
                    declared,
                )
                flips = organiser is not None and organiser["reproduced"] != recorded["reproduced"]
                out.append(
                    Finding(
                        "fail" if flips else "warn",
                        "verdict",
                        f"task {name} was judged with tolerance {recorded['tolerance']}, config.yaml "
                        f"declares {declared} for suite {task.get('suite')}"
                        + (f", under which it is reproduced={organiser['reproduced']}" if flips else ""),
                    )
                )
    status = (entry.get("verdict") or {}).get("status", "no_reference")
    level = {"reproduced": "ok", "partial": "warn", "not_reproduced": "warn", "no_reference": "ok"}[status]
    out.append(Finding(level, "verdict", f"overall verdict against the paper: {status}"))
    return out


def _paper_numbers(config: dict, recipe: str | None) -> dict[str, float | None] | None:
    """Task name -> the paper's number config.yaml gives for it (None: no published score), for a recipe it knows."""
    if recipe not in config["recipes"]:
        return None
    known = config["recipes"][recipe]
    metrics = (known.get("published") or {}).get("metrics") or {}
    return {
        t["name"]: metrics.get(t["published_key"]) if t.get("published_key") else None
        for suite in known["eval"]["suites"]
        for t in config["suites"][suite]
    }


def _flat(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    return {prefix: value}


def config_diff(bundled: dict, known: dict, limit: int = 20) -> list[str]:
    """Dotted keys whose values differ, as 'key: <bundle> in the bundle, <known> in config.yaml'."""
    a, b = _flat(bundled), _flat(known)
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            lines.append(
                f"{key}: {json.dumps(a.get(key, '<absent>'))} in the bundle, "
                f"{json.dumps(b.get(key, '<absent>'))} in config.yaml"
            )
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


def check_config(contents: Contents, config: dict | None) -> list[Finding]:
    bundled = dict(contents.json("config/recipe.json"))
    name = bundled.pop("name")
    recorded = contents.json("eval.json")["provenance"]["config_hash"]
    out = []
    if payload_hash(bundled) != recorded:
        out.append(
            Finding(
                "fail",
                "config",
                f"config/recipe.json hashes to {payload_hash(bundled)}, not to the "
                f"config_hash {recorded} the run recorded: the config was changed "
                "after the run",
            )
        )
    if config is None:
        return out
    if name not in config["recipes"]:
        return out + [Finding("fail", "config", f"recipe '{name}' is not a recipe of config.yaml")]
    diff = config_diff(bundled, recipe_payload(config, name))
    if diff:
        out.append(
            Finding("fail", "config", f"the bundle's recipe differs from config.yaml's '{name}': " + "; ".join(diff))
        )
    else:
        out.append(Finding("ok", "config", f"the bundle ran config.yaml's recipe '{name}' as it stands"))
    return out


def _tree_hash(files: dict[str, dict]) -> str:
    """menagerie.provenance.file_hashes of a directory, from its per-file hashes."""
    digest = hashlib.sha256()
    for rel in sorted(files, key=Path):
        digest.update(rel.encode())
        digest.update(bytes.fromhex(files[rel]["sha256"]))
    return digest.hexdigest()


def check_models(contents: Contents) -> list[Finding]:
    out = []
    records = {
        n[len("models/") : -len(".json")]: contents.json(n)
        for n in contents.members
        if n.startswith("models/") and n.count("/") == 1 and n.endswith(".json")
    }
    by_path = {}
    for label, record in sorted(records.items()):
        if _tree_hash(record["files"]) != record["tree_sha256"]:
            out.append(
                Finding(
                    "fail",
                    "models",
                    f"models/{label}.json: its file hashes do not add up to its directory hash (a hash was edited)",
                )
            )
        by_path[record["path"].rstrip("/")] = (label, record)
        for rel, entry in record["files"].items():  # bundled copies of small files
            member = f"models/{label}/{rel}"
            if member in contents.members and _sha(contents.data(member)) != entry["sha256"]:
                out.append(Finding("fail", "models", f"{member} does not hash to what models/{label}.json records"))
    for name in sorted(contents.members):
        if not (name.startswith("provenance/") and name.endswith("provenance.json")):
            continue
        record = contents.json(name)
        model = str(record.get("model") or "").rstrip("/")
        recorded = (record.get("input_sha256") or {}).get("model")
        if recorded and model in by_path and by_path[model][1]["tree_sha256"] != recorded:
            out.append(
                Finding(
                    "fail",
                    "models",
                    f"{name} read model {model} with hash {recorded[:12]}…, the bundle's "
                    f"models/{by_path[model][0]}.json says "
                    f"{by_path[model][1]['tree_sha256'][:12]}…",
                )
            )
    if not out:
        out.append(Finding("ok", "models", f"{len(records)} model directories hashed, consistent with provenance"))
    return out


def _materialise(contents: Contents, tmp: Path) -> Path:
    """The bundle's provenance and ledger laid out as results/<recipe>/ (for menagerie.train.budget.run_usage)."""
    for name in contents.members:
        if name.startswith("provenance/"):
            target = tmp / name[len("provenance/") :]
        elif name == "budget/ledger.jsonl":
            target = tmp / name
        else:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(contents.data(name))
    return tmp


def _rules_recipe(contents: Contents, config: dict | None) -> dict:
    bundled = contents.json("config/recipe.json")
    if config is not None and bundled["name"] in config["recipes"]:
        return config["recipes"][bundled["name"]]  # the organiser's rules, not the submitter's copy
    return bundled["recipe"]


def check_budget(contents: Contents, config: dict | None) -> list[Finding]:
    from menagerie.train.budget import run_usage

    recipe = _rules_recipe(contents, config)
    with tempfile.TemporaryDirectory() as tmp:
        usage = run_usage(_materialise(contents, Path(tmp)), recipe)
    if usage["held"] is None:
        return [
            Finding(
                "ok",
                "budget",
                f"no budget declared; the run used {usage['wall_hours']:.3f} wall hours, "
                f"{usage['gpu_hours']:.3f} GPU-hours",
            )
        ]
    if not usage["held"]:
        return [Finding("fail", "budget", f"the budget was overrun: {o}") for o in usage["overruns"]]
    return [
        Finding(
            "ok",
            "budget",
            f"the budget held: {usage['wall_hours']:.3f} wall hours, "
            f"{usage['gpu_hours']:.3f} GPU-hours, at most {usage['max_gpus']} GPU(s)",
        )
    ]


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def gpu_matches(declared: str, seen: str) -> bool:
    """Whether a config gpu_model key (config.yaml `gpu_models:`, e.g. rtx4090_24gb, a100_80gb) names the device
    torch reported: its family is in the name ('NVIDIA GeForce RTX 4090') and a memory size the name states agrees
    ('NVIDIA A100-SXM4-80GB' is an a100_80gb, not an a100_40gb)."""
    match = re.match(r"^(.*?)(?:_(\d+)gb)?$", declared.lower())
    family, memory = match.group(1), match.group(2)
    stated = re.search(r"(\d+)\s*gb", seen.lower())
    return _norm(family) in _norm(seen) and not (memory and stated and stated.group(1) != memory)


def check_hardware(contents: Contents, config: dict | None) -> list[Finding]:
    recipe = _rules_recipe(contents, config)
    budget_model = (recipe.get("budget") or {}).get("gpu_model")
    out = []
    for name in sorted(contents.members):
        if not (name.startswith("provenance/") and name.endswith("provenance.json")):
            continue
        stage = name[len("provenance/") :].split("/")[0]
        record = contents.json(name)
        seen = ((record.get("environment") or {}).get("hardware") or {}).get("gpus")
        if seen is None:
            continue
        if stage == "eval":
            resources = recipe["eval"].get("resources") or {}
        elif stage.endswith("_merged"):
            resources = (recipe["stages"].get("merge") or {}).get("resources") or {}
        else:
            resources = (recipe["stages"].get(stage) or {}).get("resources") or {}
        declared = budget_model or resources.get("gpu_model")
        if not declared:
            continue
        wrong = [g for g in seen if not gpu_matches(declared, g)] or ([] if seen else ["no GPU"])
        if wrong:
            level = "fail" if budget_model else "warn"
            rule = "the budget names" if budget_model else "the recipe declares"
            out.append(
                Finding(level, "hardware", f"stage {stage} ran on {', '.join(sorted(set(wrong)))}; {rule} {declared}")
            )
    return out or [Finding("ok", "hardware", "every stage ran on the hardware the recipe declares (or declares none)")]


def rerun_evaluation(
    contents: Contents, model_dir: Path, root: Path, tasks: list[str] | None, work: Path | None = None
) -> list[Finding]:
    """Re-run the final model's evaluation (all tasks, or `tasks`) and compare with the submitted scores."""
    from menagerie.evaluate.run import evaluate_model
    from menagerie.provenance import file_hashes
    from menagerie.verdict import judge
    from menagerie.workflow import dataset_file

    entry = contents.json("eval.json")
    out = []
    final = entry["model"]["final"].rstrip("/")
    bundled = [
        contents.json(n)
        for n in contents.members
        if n.startswith("models/") and n.count("/") == 1 and n.endswith(".json")
    ]
    expected = next((m["tree_sha256"] for m in bundled if m["path"].rstrip("/") == final), None)
    actual = file_hashes({"m": model_dir}).get("m")
    if expected and actual != expected:
        out.append(
            Finding(
                "fail",
                "model",
                f"{model_dir} is not the bundled final model ({final}): its hash is "
                f"{(actual or 'none')[:12]}…, the bundle records {expected[:12]}…",
            )
        )
    elif expected:
        out.append(Finding("ok", "model", f"{model_dir} is the bundled final model"))
    payload = contents.json("config/recipe.json")
    name = payload["name"]
    submitted = {n: t for n, t in entry["tasks"].items() if t["status"] == "ok"}
    wanted = set(tasks or submitted)
    unknown = wanted - set(entry["tasks"])
    if unknown:
        raise MenagerieError(
            f"TASKS names {', '.join(sorted(unknown))}, not tasks of this bundle ({', '.join(sorted(entry['tasks']))})"
        )
    suites = {s: [t for t in items if t["name"] in wanted] for s, items in payload["suites"].items()}
    suites = {s: items for s, items in suites.items() if items}
    recipe = {**payload["recipe"], "eval": {**payload["recipe"]["eval"], "suites": list(suites)}}
    config = {
        "recipes": {name: recipe},
        "suites": suites,
        "judges": payload.get("judges") or {},
        "datasets": payload.get("datasets") or {},
        "models": {},
    }
    data = {
        t["dataset"]: root / dataset_file(t["dataset"]) for items in suites.values() for t in items if t.get("dataset")
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(work or tmp)
        metrics = evaluate_model(config, name, model_dir, "final", data, work / "metrics.json", work / "work")
    for task, again in sorted(metrics["tasks"].items()):
        before = submitted.get(task)
        if before is None or again["status"] != "ok":
            out.append(
                Finding(
                    "warn",
                    "rerun",
                    f"task {task} was not compared (submitted "
                    f"{entry['tasks'][task]['status']}, re-run {again['status']})",
                )
            )
            continue
        v = judge(again["value"], before["value"], again.get("stderr"), 0.0, before.get("stderr"))
        level = "ok" if v["reproduced"] else "fail"
        out.append(
            Finding(
                level,
                "rerun",
                f"task {task}: re-run {again['value']:.2f}, submitted "
                f"{before['value']:.2f}, |Δ| {abs(v['delta']):.2f} {'<=' if v['reproduced'] else '>'} "
                f"2 x combined se {v['bound']:.2f}",
            )
        )
    return out


REQUIRED = ("eval.json", "config/recipe.json")  # what the checks after integrity read


def check_readable(contents: Contents) -> list[Finding]:
    """A fail finding for each required member that is missing and each JSON member that does not parse (a bundle
    cut or edited by hand): the content checks read them, so they run only when this finds nothing."""
    out = [
        Finding("fail", "integrity", f"{name} is missing from the bundle; its content cannot be checked")
        for name in REQUIRED
        if name not in contents.members
    ]
    for name in sorted(n for n in contents.members if n.endswith(".json") and n != MANIFEST):  # integrity's
        try:
            parsed = contents.json(name)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            out.append(
                Finding("fail", "integrity", f"{name} is not readable JSON ({exc}); its content cannot be checked")
            )
            continue
        if name in REQUIRED and not isinstance(parsed, dict):
            out.append(
                Finding(
                    "fail",
                    "integrity",
                    f"{name} holds a JSON {type(parsed).__name__}, not an object; its content cannot be checked",
                )
            )
    return out


def check_bundle(
    path: str | Path,
    config: dict | None = None,
    model_dir: str | Path | None = None,
    root: str | Path = ".",
    tasks: list[str] | None = None,
) -> list[Finding]:
    contents = read_bundle(path)
    findings = check_integrity(contents)
    unreadable = check_readable(contents)
    if unreadable:
        return findings + unreadable
    findings += check_eval(contents)
    findings += check_verdict(contents, config)
    findings += check_config(contents, config)
    findings += check_models(contents)
    findings += check_budget(contents, config)
    findings += check_hardware(contents, config)
    if model_dir is not None:
        findings += rerun_evaluation(contents, Path(model_dir), Path(root), tasks)
    return findings
