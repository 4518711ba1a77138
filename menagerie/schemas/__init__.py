"""The JSON schemas of the files menagerie writes (eval.json, Open LLM Leaderboard v1 results) and their one
validator; the config's schema (config.schema.yaml) is read by menagerie.config, which words its own messages."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import jsonschema

from menagerie.errors import MenagerieError


@cache
def load(filename: str) -> dict:
    return json.loads(resources.files(__name__).joinpath(filename).read_text())


def check(data: dict, filename: str, where: str) -> None:
    """Raise MenagerieError naming the first key of `data` (read from `where`) that does not follow the schema."""
    errors = sorted(jsonschema.Draft202012Validator(load(filename)).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        path = ".".join(str(p) for p in errors[0].absolute_path) or "(top level)"
        raise MenagerieError(f"{where}: key '{path}' does not follow schemas/{filename}: {errors[0].message}")
