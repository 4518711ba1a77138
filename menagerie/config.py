"""Recipe configuration: load, resolve `extends:`, fill schema defaults, validate.

The whole config (config.yaml plus any --configfile) is experiment data. It is checked once, at
workflow start, and a mistake stops the run with one sentence naming the recipe, the key and what
was expected (ConfigError). Everything downstream receives fully resolved recipes.
"""

from __future__ import annotations

import copy
import hashlib
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from menagerie.errors import ConfigError

RECIPE_REF_PREFIX = "recipe:"
# Recipe keys a child replaces whole instead of merging: published results belong to one model, never inherited
# piecemeal (a QLoRA recipe must not inherit the full-SFT recipe's average).
REPLACED_KEYS = ("published",)


@lru_cache(maxsize=1)
def config_schema() -> dict:
    text = resources.files("menagerie.schemas").joinpath("config.schema.yaml").read_text()
    return yaml.safe_load(text)


def load_yaml(path: str | Path) -> dict:
    """Read one YAML config file; a syntax error names the file and line."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level, found {type(data).__name__}")
    return data


def deep_merge(base: Any, override: Any) -> Any:
    """Merge `override` into a copy of `base`: mappings merge key by key, anything else replaces.

    An explicit `null` in the override deletes the key (so a recipe can drop an inherited stage).
    """
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif key in merged:
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_recipe(recipes: dict[str, dict], name: str, _chain: tuple[str, ...] = ()) -> dict:
    """Return recipe `name` with its `extends:` chain applied (parents first)."""
    if name not in recipes:
        raise ConfigError(f"recipe '{name}' is not defined (known recipes: {', '.join(sorted(recipes))})")
    if name in _chain:
        cycle = " -> ".join((*_chain, name))
        raise ConfigError(f"recipe '{_chain[0]}': key 'extends' forms a cycle ({cycle})")
    raw = recipes[name]
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe '{name}': expected a mapping of recipe keys, got {type(raw).__name__}")
    parent = raw.get("extends")
    if parent is None:
        return copy.deepcopy(raw)
    if not isinstance(parent, str):
        raise ConfigError(f"recipe '{name}': key 'extends' expected a recipe name (string), got {parent!r}")
    if parent not in recipes:
        raise ConfigError(f"recipe '{name}': key 'extends' names unknown recipe '{parent}'")
    inherited = resolve_recipe(recipes, parent, (*_chain, name))
    for key in REPLACED_KEYS:
        if key in raw:
            inherited.pop(key, None)
    merged = deep_merge(inherited, raw)
    merged["extends"] = parent
    return merged


# ---------------------------------------------------------------------------------------------
# schema defaults


def _deref(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].split("/")[-1]]
    return schema


def fill_defaults(value: Any, schema: dict, root: dict) -> Any:
    """Fill `default:` values declared in the schema into `value` (in place, returns value)."""
    schema = _deref(schema, root)
    if "oneOf" in schema and isinstance(value, dict):
        for option in schema["oneOf"]:
            option = _deref(option, root)
            if option.get("type") == "object":
                return fill_defaults(value, option, root)
        return value
    if not isinstance(value, dict):
        return value
    for key, sub in schema.get("properties", {}).items():
        sub_resolved = _deref(sub, root)
        default = sub.get("default", sub_resolved.get("default"))  # a default beside a $ref wins
        if key not in value and (default is not None or "default" in sub_resolved):
            value[key] = copy.deepcopy(default)
        if key in value and isinstance(value[key], list) and "items" in sub_resolved:
            for item in value[key]:
                fill_defaults(item, sub_resolved["items"], root)
        elif key in value:
            fill_defaults(value[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, sub_value in value.items():
            if key not in schema.get("properties", {}):
                if extra.get("type") == "array" and isinstance(sub_value, list):
                    for item in sub_value:
                        fill_defaults(item, extra.get("items", {}), root)
                else:
                    fill_defaults(sub_value, extra, root)
    return value


# ---------------------------------------------------------------------------------------------
# validation messages


def _describe_expected(error: jsonschema.ValidationError) -> str:
    validator, expected = error.validator, error.validator_value
    if validator == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        words = {
            "number": "a number",
            "integer": "an integer",
            "string": "a string",
            "boolean": "true or false",
            "object": "a mapping",
            "array": "a list",
            "null": "null",
        }
        return "expected " + " or ".join(words.get(k, k) for k in kinds) + f", got {error.instance!r}"
    if validator == "enum":
        return f"expected one of {', '.join(map(str, expected))}, got {error.instance!r}"
    if validator == "const":
        return f"expected {expected!r}, got {error.instance!r}"
    if validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        extras = sorted(set(error.instance) - set(known))
        return f"unknown key {', '.join(repr(e) for e in extras)} (allowed keys: {', '.join(known)})"
    if validator == "required":
        missing = [k for k in expected if k not in error.instance]
        return f"missing required key {', '.join(repr(m) for m in missing)}"
    if validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        rel = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[validator]
        return f"expected a value {rel} {expected}, got {error.instance!r}"
    if validator == "pattern":
        return f"expected a string matching {expected}, got {error.instance!r}"
    if validator == "minItems":
        return f"expected at least {expected} item(s), got {len(error.instance)}"
    if validator == "not":
        return "expected either 'count' or 'fraction', not both"
    if validator == "oneOf":
        return f"expected a mapping of stage settings or null, got {error.instance!r}"
    return error.message


def _error_location(path: list) -> tuple[str | None, str]:
    """Split a jsonschema path into (recipe name or section, dotted key)."""
    parts = [str(p) for p in path]
    if len(parts) >= 2 and parts[0] == "recipes":
        return f"recipe '{parts[1]}'", ".".join(parts[2:]) or "(the recipe itself)"
    if len(parts) >= 2 and parts[0] in ("models", "datasets", "suites", "judges", "gpu_models"):
        return f"{parts[0][:-1]} '{parts[1]}'", ".".join(parts[2:]) or "(the entry itself)"
    return "config", ".".join(parts) or "(top level)"


def _deepest(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For oneOf/allOf errors, descend to the most specific sub-error."""
    while error.context:
        # prefer the branch that got furthest into the instance (the mapping branch for stages)
        error = max(error.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
    return error


def _recipe_order(recipes: Any) -> dict[str, tuple[int, int]]:
    """Rank recipes parents first (extends depth, then file order), so that a mistake in a parent is
    reported against the recipe that holds it, not against whichever descendant sorts first."""
    if not isinstance(recipes, dict):
        return {}
    order = {}
    for index, name in enumerate(recipes):
        depth, seen, current = 0, {name}, recipes[name]
        while isinstance(current, dict) and isinstance(current.get("extends"), str):
            parent = current["extends"]
            if parent in seen or parent not in recipes:
                break
            seen.add(parent)
            depth, current = depth + 1, recipes[parent]
        order[name] = (depth, index)
    return order


def schema_errors(config: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(config_schema())
    order = _recipe_order(config.get("recipes"))

    def sort_key(error: jsonschema.ValidationError) -> tuple:
        parts = [str(p) for p in error.absolute_path]
        if len(parts) >= 2 and parts[0] == "recipes":
            return (parts[0], order.get(parts[1], (0, 0)), parts[1:])
        return (parts[0] if parts else "", (0, 0), parts[1:])

    messages = []
    for error in sorted(validator.iter_errors(config), key=sort_key):
        error = _deepest(error)
        where, key = _error_location(list(error.absolute_path))
        messages.append(f"{where}: key '{key}': {_describe_expected(error)}")
    return messages


def _check_references(config: dict) -> None:
    """Cross-references a JSON schema cannot express, one section at a time (suites, averages, models and datasets,
    then each recipe, parents first); the first mistake found is the one reported."""
    _check_suites(config)
    _check_averages(config)
    _check_models_and_datasets(config)
    order = _recipe_order(config["recipes"])
    for name in sorted(
        config["recipes"], key=order.__getitem__
    ):  # parents first: an inherited mistake names its origin
        _check_recipe(config, name)


def _check_suites(config: dict) -> None:
    """Each suite task's dataset, lm-eval task, limit shape and judges."""
    datasets, suites = config["datasets"], config["suites"]
    for suite, tasks in suites.items():
        for i, task in enumerate(tasks):
            if task.get("dataset") and task["dataset"] not in datasets:
                raise ConfigError(f"suite '{suite}': key '{i}.dataset' names unknown dataset '{task['dataset']}'")
            if task["harness"] == "lm-eval" and not task.get("lm_eval_task"):
                raise ConfigError(f"suite '{suite}': key '{i}.lm_eval_task' is required for harness lm-eval")
            if isinstance(task.get("limit"), dict) and task["harness"] != "lm-eval":
                raise ConfigError(
                    f"suite '{suite}': key '{i}.limit' is a per-member mapping, which only lm-eval "
                    f"groups take (harness {task['harness']} needs an integer)"
                )
            for role in ("judge", "info_judge"):  # a judge named but left null is skipped at run time, a typo is not
                if task.get(role) and task[role] not in (config.get("judges") or {}):
                    raise ConfigError(
                        f"suite '{suite}': key '{i}.{role}' names unknown judge '{task[role]}' "
                        f"(known: {', '.join(sorted(config.get('judges') or {})) or 'none'})"
                    )


def _check_averages(config: dict) -> None:
    """Each published average names tasks of its suite, with the suite's metric and shots."""
    suites = config["suites"]
    for name, average in (config.get("averages") or {}).items():
        where = f"averages.{name}"
        if average["suite"] not in suites:
            raise ConfigError(f"{where}: key 'suite' names unknown suite '{average['suite']}'")
        by_name = {t["name"]: t for t in suites[average["suite"]]}
        for i, part in enumerate(average["tasks"]):
            task = by_name.get(part["task"])
            if task is None:
                raise ConfigError(
                    f"{where}: key 'tasks.{i}.task' names '{part['task']}', not a task of suite "
                    f"'{average['suite']}' (tasks: {', '.join(by_name)})"
                )
            for key in ("metric", "num_fewshot"):
                if key in part and part[key] != task.get(key):
                    raise ConfigError(
                        f"{where}: key 'tasks.{i}.{key}' is {part[key]!r} but suite task "
                        f"'{part['task']}' has {task.get(key)!r}"
                    )


def _check_models_and_datasets(config: dict) -> None:
    """Model architectures; NI-sampling datasets' settings and GPU model."""
    from menagerie.plan import check_architecture, check_gpu_model  # plan imports this module

    models, datasets = config["models"], config["datasets"]
    for name, entry in models.items():
        check_architecture(name, entry)
    for name, entry in datasets.items():
        if entry.get("source") == "ni_sampling":  # Birbal's NI sampling: its tasks, model and bucket rules
            from menagerie.ni_settings import check_settings

            check_settings(name, entry, datasets, models)
            check_gpu_model(
                config, f"dataset '{name}'", "ni.inference.resources", entry["ni"]["inference"].get("resources")
            )


def _check_recipe(config: dict, name: str) -> None:
    """One recipe: its name, model, data sources, eval references, declared GPU models, then its stages."""
    from menagerie.plan import check_gpu_model  # plan imports this module

    models, datasets, suites, recipes = (config[k] for k in ("models", "datasets", "suites", "recipes"))
    recipe = recipes[name]
    where = f"recipe '{name}'"
    if name == "evals":  # results/evals/ holds the shared evaluations (menagerie.workflow.EVALS_DIR)
        raise ConfigError(
            f"{where}: the name 'evals' is reserved (results/evals/ holds the evaluations recipes "
            f"share); rename the recipe"
        )
    model = recipe["model"]
    if model.startswith(RECIPE_REF_PREFIX):
        if model[len(RECIPE_REF_PREFIX) :] not in recipes:
            raise ConfigError(f"{where}: key 'model' names unknown recipe '{model[len(RECIPE_REF_PREFIX) :]}'")
    elif model not in models:
        raise ConfigError(f"{where}: key 'model' names unknown model '{model}' (known: {', '.join(sorted(models))})")
    for part, mixture in recipe.get("data", {}).items():
        for i, item in enumerate(mixture["sources"]):
            if item["dataset"] not in datasets:
                raise ConfigError(
                    f"{where}: key 'data.{part}.sources.{i}.dataset' names unknown dataset '{item['dataset']}'"
                )
    if recipe["eval"].get("base_model") and recipe["eval"]["base_model"] not in models:
        raise ConfigError(
            f"{where}: key 'eval.base_model' names unknown model '{recipe['eval']['base_model']}' "
            f"(known: {', '.join(sorted(models))})"
        )
    for suite in recipe["eval"]["suites"]:
        if suite not in suites:
            raise ConfigError(
                f"{where}: key 'eval.suites' names unknown suite '{suite}' (known: {', '.join(sorted(suites))})"
            )
    stages = recipe["stages"]
    for key, settings in (
        ("contamination", recipe.get("contamination")),
        ("eval", recipe["eval"]),
        *((f"stages.{s}", stages.get(s)) for s in ("sft", "dpo", "merge")),
    ):
        check_gpu_model(config, where, f"{key}.resources", (settings or {}).get("resources"))
    if not any(stages.get(s) for s in ("sft", "dpo", "merge")):
        raise ConfigError(f"{where}: key 'stages' must define at least one of sft, dpo, merge")
    for stage in ("sft", "dpo"):
        if stages.get(stage):
            _check_training_stage(recipe, where, stage, stages[stage])
    if stages.get("merge"):
        _check_merge(config, name, where, stages)


def _check_training_stage(recipe: dict, where: str, stage: str, settings: dict) -> None:
    """An SFT/DPO stage: its data, batch split, method's required keys, keep_best cadence, DPO's beta."""
    if stage not in recipe.get("data", {}):
        raise ConfigError(f"{where}: key 'data.{stage}' is required because stage '{stage}' is defined")
    if settings["global_batch_size"] % settings["micro_batch_size"]:
        raise ConfigError(
            f"{where}: key 'stages.{stage}.global_batch_size' ({settings['global_batch_size']})"
            f" must be a multiple of micro_batch_size ({settings['micro_batch_size']})"
        )
    if settings["method"] == "qlora" and settings.get("quantization", {}).get("bits") != 4:
        raise ConfigError(f"{where}: key 'stages.{stage}.quantization.bits' must be 4 for method qlora")
    if settings["method"] in ("lora", "qlora") and "lora" not in settings:
        raise ConfigError(f"{where}: key 'stages.{stage}.lora' is required for method {settings['method']}")
    if settings["keep_best"]:
        if not settings["eval_steps"]:
            raise ConfigError(f"{where}: key 'stages.{stage}.eval_steps' is required when keep_best is true")
        if (settings["save_steps"] or settings["eval_steps"]) % settings["eval_steps"]:
            raise ConfigError(
                f"{where}: key 'stages.{stage}.save_steps' ({settings['save_steps']}) must be "
                f"a multiple of eval_steps ({settings['eval_steps']}) when keep_best is true"
            )
    if stage == "dpo" and "beta" not in settings:
        raise ConfigError(f"{where}: key 'stages.dpo.beta' is required for DPO")


def _check_merge(config: dict, name: str, where: str, stages: dict) -> None:
    """The merge stage: what it merges into, the adapters it combines, where its adapter comes from."""
    models, recipes = config["models"], config["recipes"]
    merge = stages["merge"]
    into = merge["into"]
    if into is not None and into.startswith(RECIPE_REF_PREFIX):
        if into[len(RECIPE_REF_PREFIX) :] not in recipes or into[len(RECIPE_REF_PREFIX) :] == name:
            raise ConfigError(
                f"{where}: key 'stages.merge.into' names unknown recipe '{into[len(RECIPE_REF_PREFIX) :]}'"
            )
    elif into is not None and into not in models:
        raise ConfigError(f"{where}: key 'stages.merge.into' names unknown model '{into}'")
    combine = merge.get("combine") or {}
    for i, extra in enumerate(combine.get("adapters", [])):
        trained = (recipes.get(extra["recipe"]) or {}).get("stages", {}).get(extra["stage"]) or {}
        if not trained or trained.get("method") == "full":
            raise ConfigError(
                f"{where}: key 'stages.merge.combine.adapters.{i}' names no LoRA/QLoRA stage "
                f"'{extra['stage']}' of recipe '{extra['recipe']}'"
            )
    if combine.get("method") in ("ties", "dare_linear", "dare_ties") and combine.get("density") is None:
        raise ConfigError(f"{where}: key 'stages.merge.combine.density' is required for method {combine['method']}")
    if merge["adapter_from"] is not None and merge["adapter_from"] not in recipes:
        raise ConfigError(f"{where}: key 'stages.merge.adapter_from' names unknown recipe '{merge['adapter_from']}'")
    if merge["adapter_from"] is None and not any(
        stages.get(s) and stages[s]["method"] != "full" for s in ("sft", "dpo")
    ):
        raise ConfigError(f"{where}: key 'stages.merge' needs a LoRA/QLoRA stage or 'adapter_from'")


def validate_config(raw: dict) -> dict:
    """Resolve and validate a raw config mapping; returns a new, fully resolved config."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config must be a mapping, got {type(raw).__name__}")
    for section in ("models", "datasets", "suites", "recipes"):
        if section not in raw:
            raise ConfigError(f"config: missing required section '{section}'")
        if not isinstance(raw[section], dict):
            raise ConfigError(f"config: section '{section}' expected a mapping, got {type(raw[section]).__name__}")
    resolved = copy.deepcopy(raw)
    resolved["recipes"] = {name: resolve_recipe(raw["recipes"], name) for name in raw["recipes"]}
    messages = schema_errors(resolved)
    if messages:
        extra = f" ({len(messages) - 1} more problem(s) after fixing this one)" if len(messages) > 1 else ""
        raise ConfigError(messages[0] + extra)
    fill_defaults(resolved, config_schema(), config_schema())
    _check_references(resolved)
    if "recipe" in resolved and resolved["recipe"] not in resolved["recipes"]:
        raise ConfigError(f"config: key 'recipe' names unknown recipe '{resolved['recipe']}'")
    return resolved


def load_config(*paths: str | Path) -> dict:
    """Load and merge config files in order (later files override earlier ones), then validate."""
    merged: dict = {}
    for path in paths:
        merged = deep_merge(merged, load_yaml(path)) if merged else load_yaml(path)
    return validate_config(merged)


def recipe_hash(config: dict, name: str) -> str:
    """Stable hash of a resolved recipe and everything it references (for provenance)."""
    return payload_hash(recipe_payload(config, name))


def payload_hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def recipe_payload(config: dict, name: str) -> dict:
    """The resolved recipe and everything it references (model, suites, datasets, judges): what recipe_hash hashes
    and what a reproduction bundle carries as its config."""
    recipe = config["recipes"][name]
    payload = {
        "recipe": recipe,
        "model": config["models"].get(recipe["model"]),
        "suites": {s: config["suites"][s] for s in recipe["eval"]["suites"]},
        "datasets": {
            k: config["datasets"][k]
            for part in recipe.get("data", {}).values()
            for k in [i["dataset"] for i in part["sources"]]
        },
    }
    judges = {
        t[r]: (config.get("judges") or {}).get(t[r])
        for s in recipe["eval"]["suites"]
        for t in config["suites"][s]
        for r in ("judge", "info_judge")
        if t.get(r)
    }
    if judges:  # only where a suite uses judges, so other recipes keep their hashes
        payload["judges"] = judges
    return payload
