"""How a build's recipe differs from the published one: the recipe as config.yaml alone defines it.

A `--configfile` (or `make run CONFIG=`) may change anything; eval.json records every setting of the recipe, its
base model, its datasets, its eval suites and judges that differs from config.yaml, so a number on the leaderboard
never passes for the published recipe's when it is not.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from menagerie.config import load_config
from menagerie.errors import MenagerieError

PUBLISHED_CONFIG = Path(__file__).resolve().parent.parent / "config.yaml"


def recipe_view(config: dict, name: str) -> dict:
    """Everything a build of recipe `name` reads from the config, keyed as in the config (recipes.<name>, models.<m>,
    datasets.<d>, suites.<s>, judges.<j>)."""
    recipe = config["recipes"][name]
    view: dict[str, Any] = {f"recipes.{name}": recipe}
    if recipe.get("model") in config.get("models", {}):
        view[f"models.{recipe['model']}"] = config["models"][recipe["model"]]
    for part in (recipe.get("data") or {}).values():
        for item in part.get("sources", []):
            view[f"datasets.{item['dataset']}"] = config["datasets"].get(item["dataset"])
    for suite in recipe["eval"]["suites"]:
        view[f"suites.{suite}"] = config["suites"].get(suite)
        for task in config["suites"].get(suite) or []:
            if task.get("dataset"):
                view[f"datasets.{task['dataset']}"] = config["datasets"].get(task["dataset"])
            for role in ("judge", "info_judge"):
                if task.get(role):
                    view[f"judges.{task[role]}"] = (config.get("judges") or {}).get(task[role])
    return view


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        for key in sorted(value):
            _flatten(value[key], f"{prefix}.{key}", out)
    else:
        out[prefix] = value
    return out


def diff(published: dict, used: dict) -> dict[str, dict]:
    """{dotted key: {"published": value, "used": value}} for every leaf that differs (absent reads as None)."""
    before = _flatten(published, "", {}) if published else {}
    after = _flatten(used, "", {}) if used else {}
    return {
        key[1:]: {"published": before.get(key), "used": after.get(key)}
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }


@lru_cache(maxsize=4)
def _published_config(path: str) -> dict | None:
    try:
        return load_config(path)
    except (OSError, MenagerieError):
        return None


def recipe_overrides(config: dict, name: str, published_path: str | Path = PUBLISHED_CONFIG) -> dict:
    """{"published_recipe", "changed": {key: {"published", "used"}}} of recipe `name` against `published_path`.

    `published_recipe` is False when config.yaml has no recipe of that name (a recipe of the user's own); `changed`
    is then empty, as there is nothing published to compare with. None of it when config.yaml cannot be read."""
    published = _published_config(str(published_path))
    if published is None:
        return {"published_recipe": None, "changed": {}, "compared_with": None}
    if name not in published["recipes"]:
        return {"published_recipe": False, "changed": {}, "compared_with": "config.yaml"}
    return {
        "published_recipe": True,
        "changed": diff(recipe_view(published, name), recipe_view(config, name)),
        "compared_with": "config.yaml",
    }


def override_summary(overrides: dict | None) -> str | None:
    """One line for the leaderboard, None for an unmodified published recipe (or an eval.json without the record)."""
    if not overrides:
        return None
    if overrides.get("published_recipe") is False:
        return "not a published recipe (defined by a --configfile)"
    changed = overrides.get("changed") or {}
    if not changed:
        return None
    keys = list(changed)
    shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    return f"modified by a --configfile: {len(keys)} setting(s) differ from config.yaml ({shown})"
