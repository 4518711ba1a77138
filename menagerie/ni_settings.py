"""Birbal's NI sampling settings, as the config sees them: cross-checks the JSON schema cannot express, and the
key its base-model predictions are cached under (config layer: config.py and workflow.py use these without loading
the sampler, menagerie.data.ni_sampling, or its inference, menagerie.inference.ni_predict)."""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction

from menagerie.errors import ConfigError


def check_settings(name: str, entry: dict, datasets: dict, models: dict) -> None:
    """Cross-checks of a `source: ni_sampling` dataset the JSON schema cannot express (raises ConfigError)."""
    where = f"dataset '{name}'"
    tasks = entry["tasks"]
    if tasks not in datasets:
        raise ConfigError(f"{where}: key 'tasks' names unknown dataset '{tasks}'")
    if datasets[tasks].get("schema") != "natural_instructions":
        raise ConfigError(
            f"{where}: key 'tasks' names dataset '{tasks}' with schema "
            f"{datasets[tasks].get('schema')}, expected natural_instructions (NI task files)"
        )
    if entry["model"] not in models:
        raise ConfigError(
            f"{where}: key 'model' names unknown model '{entry['model']}' (known: {', '.join(sorted(models))})"
        )
    if entry["schema"] != "open_platypus":
        raise ConfigError(
            f"{where}: key 'schema' must be open_platypus for source ni_sampling (the rows it writes), "
            f"got {entry['schema']}"
        )
    spec = entry["ni"]
    edges = spec["edges"]
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ConfigError(f"{where}: key 'ni.edges' must increase strictly, got {edges}")
    given = [k for k in ("share", "per_task") if spec.get(k) is not None]
    if len(given) != 1:
        raise ConfigError(
            f"{where}: key 'ni' needs exactly one of 'share' (of the count, per bucket) or 'per_task' "
            f"(weight of each task, per bucket), got {' and '.join(given) or 'neither'}"
        )
    values = spec[given[0]]
    if len(values) != len(edges) - 1:
        raise ConfigError(
            f"{where}: key 'ni.{given[0]}' needs one value per bucket ({len(edges) - 1} for "
            f"{len(edges)} edges), got {len(values)}"
        )
    if given[0] == "share" and sum(Fraction(str(v)) for v in values) > 1:
        raise ConfigError(f"{where}: key 'ni.share' must sum to at most 1, got {sum(values)}")


def predict_settings(config: dict, name: str) -> dict:
    """Everything the predictions of dataset `name` depend on (their cache key hashes this)."""
    entry = config["datasets"][name]
    inference = {k: v for k, v in entry["ni"]["inference"].items() if k != "resources"}
    return {
        "tasks": config["datasets"][entry["tasks"]],
        "model": config["models"][entry["model"]],
        "selection": entry["ni"]["selection"],
        "inference": inference,
    }


def predictions_key(config: dict, name: str) -> str:
    """`<model>-<tasks>-<hash>`: datasets with the same tasks, model, selection and inference share predictions."""
    entry = config["datasets"][name]
    digest = hashlib.sha256(json.dumps(predict_settings(config, name), sort_keys=True).encode()).hexdigest()
    return f"{entry['model']}-{entry['tasks']}-{digest[:12]}"
