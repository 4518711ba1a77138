"""Where each recipe's artifacts live and which artifact each stage reads: the DAG, as plain functions.

rules/*.smk call these; keeping them here makes the DAG logic unit-testable without Snakemake.
"""

from __future__ import annotations

import hashlib
import json

from menagerie.config import RECIPE_REF_PREFIX
from menagerie.device import PRECISION_DTYPES
from menagerie.errors import MenagerieError

TRAINING_STAGES = ("sft", "dpo")
# Settings that say where and with what a job runs, never what it computes: editing them reruns nothing.
RUNTIME_KEYS = ("resources", "save_minutes")
# `eval:` keys that choose which models eval.json compares, not how a model is scored: out of the suite hash
EVAL_ROLE_KEYS = ("compare_base", "base_model", "compare_start")
EVALS_DIR = "results/evals"  # shared evaluations: results/evals/<model key>/<suite hash>/ (RecipePaths.eval_dir)
EVAL_ROLES = ("final", "base", "start")


def settings_hash(payload) -> str:
    """Short stable hash of a JSON-able payload (a rule's `params:` value: Snakemake reruns the rule when it changes)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _without_runtime(settings: dict | None) -> dict | None:
    return None if settings is None else {k: v for k, v in settings.items() if k not in RUNTIME_KEYS}


def dataset_file(name: str) -> str:
    return f"resources/datasets/{name}.jsonl"


def model_dir(model: str) -> str:
    return f"resources/models/{model}"


class RecipePaths:
    """Paths for one resolved config. Every output lives under results/<recipe>/ or resources/."""

    def __init__(self, config: dict):
        self.config = config
        self._jobs: dict[str, tuple[str, str]] | None = None  # _eval_jobs, built on first use

    def recipe(self, name: str) -> dict:
        return self.config["recipes"][name]

    def training_stages(self, name: str) -> list[str]:
        stages = self.recipe(name)["stages"]
        return [s for s in TRAINING_STAGES if stages.get(s)]

    def is_adapter(self, name: str, stage: str) -> bool:
        return self.recipe(name)["stages"][stage]["method"] != "full"

    def base_model(self, name: str) -> str:
        """The model the recipe starts from: a prepared model, or another recipe's final model."""
        model = self.recipe(name)["model"]
        if model.startswith(RECIPE_REF_PREFIX):
            return self.final_model(model[len(RECIPE_REF_PREFIX) :])
        return model_dir(model)

    def root_model(self, name: str) -> str:
        """The prepared model at the root of the recipe's `recipe:` chain (its pretrained base)."""
        model = self.recipe(name)["model"]
        while model.startswith(RECIPE_REF_PREFIX):
            model = self.recipe(model[len(RECIPE_REF_PREFIX) :])["model"]
        return model_dir(model)

    def eval_base_model(self, name: str) -> str:
        """The model eval.json compares with as `base`: `eval.base_model`, else the root of `model`."""
        chosen = self.recipe(name)["eval"].get("base_model")
        return model_dir(chosen) if chosen else self.root_model(name)

    def start_model(self, name: str) -> str | None:
        """The model the recipe's last training stage starts from (DPO: the SFT model), when eval.json compares
        with it (`eval.compare_start`) and it is not the base model; else None."""
        stages = self.training_stages(name)
        if not stages or not self.recipe(name)["eval"].get("compare_start", True):
            return None
        start = self.stage_input(name, stages[-1])
        return None if start == self.eval_base_model(name) else start

    def start_metrics(self, name: str) -> str | None:
        """metrics.json of the starting model (the shared evaluation: the upstream recipe's own final one when the
        start is its final model scored with the same suite settings), or None."""
        return self.evaluations(name).get("start")

    # ---- evaluations, keyed by what determines the scores: results/evals/<model key>/<suite hash>/metrics.json.
    # Recipes that evaluate the same model under the same suite settings share one job (the three Tulu 2 7B recipes
    # score Llama-2-7B once; tulu2-dpo-7b's Δsft reads tulu2-7b's final evaluation).

    def model_key(self, model: str) -> str:
        """The identity of a model directory the DAG names: a prepared model is `<name>@<hash of its models: entry>`
        (source, repo, revision, file and sha256: what its weights are; the description aside), a recipe's output is
        `<recipe>.<stage directory>` (the stage that produced it; a retrained stage reruns what reads it)."""
        prefix = "resources/models/"
        if model.startswith(prefix):
            name = model[len(prefix) :]
            entry = {k: v for k, v in self.config["models"][name].items() if k != "description"}
            return f"{name}@{settings_hash(entry)[:8]}"
        recipe, _, stage = model[len("results/") :].partition("/")
        if not model.startswith("results/") or not stage or "/" in stage:
            raise ValueError(f"no model key for '{model}': not a prepared model or a recipe's stage directory")
        return f"{recipe}.{stage}"

    def suite_settings(self, name: str) -> dict:
        """What a model's scores on recipe `name`'s suites depend on: the `eval:` settings but where the job runs
        (resources) and which models eval.json compares; the suites' tasks, the judges they name and the entries of
        their datasets; the chat format only where a task wraps its prompts in it (chat_format true)."""
        recipe = self.recipe(name)
        suites = self._suites(name)
        tasks = [t for items in suites.values() for t in items]
        return {
            "eval": {k: v for k, v in recipe["eval"].items() if k not in RUNTIME_KEYS + EVAL_ROLE_KEYS},
            "suites": suites,
            "chat_format": recipe["chat_format"] if any(t.get("chat_format", True) for t in tasks) else None,
            "judges": {
                t[r]: (self.config.get("judges") or {}).get(t[r])
                for t in tasks
                for r in ("judge", "info_judge")
                if t.get(r)
            },
            "datasets": {t["dataset"]: self.config["datasets"].get(t["dataset"]) for t in tasks if t.get("dataset")},
        }

    def suite_hash(self, name: str) -> str:
        return settings_hash(self.suite_settings(name))

    def eval_dir(self, model: str, name: str) -> str:
        """Where `model`, scored on recipe `name`'s suites, is evaluated: metrics.json, its provenance, work/ and
        lm-eval's native results (lm_eval/)."""
        return f"{EVALS_DIR}/{self.model_key(model)}/{self.suite_hash(name)}"

    def evaluated_models(self, name: str) -> dict[str, str]:
        """The models eval.json of recipe `name` reports, by role: `final`, `base` (eval.compare_base) and `start`
        (the model the last training stage started from, when compared and not the base)."""
        models = {"final": self.final_model(name)}
        if self.recipe(name)["eval"]["compare_base"]:
            models["base"] = self.eval_base_model(name)
        start = self.start_model(name)
        if start is not None:
            models["start"] = start
        return models

    def evaluations(self, name: str) -> dict[str, str]:
        """metrics.json of each model eval.json of recipe `name` reports, by role (the shared evaluations)."""
        return {
            role: f"{self.eval_dir(model, name)}/metrics.json" for role, model in self.evaluated_models(name).items()
        }

    def _eval_jobs(self) -> dict[str, tuple[str, str]]:
        """'<model key>/<suite hash>' -> (model directory, the first recipe in config order that asks for it)."""
        if self._jobs is None:
            jobs: dict[str, tuple[str, str]] = {}
            for name in self.config["recipes"]:
                suite = self.suite_hash(name)
                for model in self.evaluated_models(name).values():
                    jobs.setdefault(f"{self.model_key(model)}/{suite}", (model, name))
            self._jobs = jobs
        return self._jobs

    def eval_job(self, model_key: str, suite_hash: str) -> tuple[str, str]:
        """(model directory, recipe whose suite settings the job reads) of results/evals/<model_key>/<suite_hash>:
        every recipe with that key has the same settings that score (suite_settings), so the first one stands for
        all of them (its `eval.resources` size the job)."""
        found = self._eval_jobs().get(f"{model_key}/{suite_hash}")
        if found is None:
            raise MenagerieError(
                f"{EVALS_DIR}/{model_key}/{suite_hash}: no recipe of the config evaluates model key "
                f"'{model_key}' with suite hash '{suite_hash}' (RecipePaths.evaluations names them)"
            )
        return found

    def eval_job_inputs(self, model_key: str, suite_hash: str) -> dict[str, str]:
        """The evaluate job's inputs: `model` and the suites' dataset files (by dataset name)."""
        model, recipe = self.eval_job(model_key, suite_hash)
        return {"model": model, **self.eval_datasets(recipe)}

    def stage_dir(self, name: str, stage: str) -> str:
        return f"results/{name}/{stage}"

    def merged_dir(self, name: str, stage: str) -> str:
        return f"results/{name}/{stage}_merged"

    def stage_model(self, name: str, stage: str) -> str:
        """The full model usable after `stage` (its merge, when the stage trained an adapter)."""
        return self.merged_dir(name, stage) if self.is_adapter(name, stage) else self.stage_dir(name, stage)

    def stage_input(self, name: str, stage: str) -> str:
        previous = [s for s in self.training_stages(name) if TRAINING_STAGES.index(s) < TRAINING_STAGES.index(stage)]
        return self.stage_model(name, previous[-1]) if previous else self.base_model(name)

    def adapter_source(self, name: str) -> str | None:
        merge = self.recipe(name)["stages"].get("merge")
        return merge["adapter_from"] if merge else None

    def merge_inputs(self, name: str, stage: str) -> dict[str, str]:
        """Adapter and target of the merge `results/<name>/<stage>_merged`."""
        source = self.adapter_source(name)
        merge = self.recipe(name)["stages"].get("merge") or {}
        if source:
            adapter, default_target = self.stage_dir(source, stage), self.stage_input(source, stage)
            last = True
        else:
            adapter, default_target = self.stage_dir(name, stage), self.stage_input(name, stage)
            last = stage == self.training_stages(name)[-1]
        target = self.merge_target(merge["into"]) if last and merge.get("into") else default_target
        inputs = {"adapter": adapter, "into": target}
        if last and merge.get("combine"):
            inputs["combine_with"] = [self.stage_dir(a["recipe"], a["stage"]) for a in merge["combine"]["adapters"]]
        return inputs

    def merge_target(self, into: str) -> str:
        """`merge.into`: a prepared model, or (recipe:<name>) another recipe's final model."""
        if into.startswith(RECIPE_REF_PREFIX):
            return self.final_model(into[len(RECIPE_REF_PREFIX) :])
        return model_dir(into)

    def merge_combination(self, name: str, stage: str) -> dict | None:
        """The weighted multi-adapter merge of `results/<name>/<stage>_merged`: peft method, density and every
        (adapter directory, weight), the merge's own adapter first; None for a plain single-adapter merge."""
        merge = self.recipe(name)["stages"].get("merge") or {}
        inputs = self.merge_inputs(name, stage)
        if not merge.get("combine") or "combine_with" not in inputs:
            return None
        combine = merge["combine"]
        adapters = [(inputs["adapter"], combine["weight"])]
        adapters += [(path, a["weight"]) for path, a in zip(inputs["combine_with"], combine["adapters"])]
        return {
            "method": combine["method"],
            "density": combine["density"],
            "majority_sign_method": combine["majority_sign_method"],
            "adapters": adapters,
        }

    def merge_dtype(self, name: str, stage: str) -> str:
        merge = self.recipe(name)["stages"].get("merge")
        if merge:
            return merge["dtype"]
        precision = self.recipe(name)["stages"][stage]["precision"]
        return PRECISION_DTYPES[precision]

    def merge_dequantize(self, name: str, stage: str) -> dict | None:
        """The 4-bit settings to dequantize the target with (QLoRA merges with `dequantize_base`), else None; with
        `weights_dtype`, the dtype the training stage loaded the base in before quantizing it (its precision)."""
        merge = self.recipe(name)["stages"].get("merge") or {}
        source = self.adapter_source(name) or name
        trained = self.recipe(source)["stages"].get(stage) or {}
        quant = trained.get("quantization")
        if merge.get("dequantize_base") and quant and quant["bits"] == 4:
            return {**quant, "weights_dtype": PRECISION_DTYPES[trained["precision"]]}
        return None

    def final_model(self, name: str) -> str:
        if self.adapter_source(name):
            return self.merged_dir(name, "sft")
        stages = self.training_stages(name)
        return self.stage_model(name, stages[-1])

    def eval_datasets(self, name: str) -> dict[str, str]:
        suites = self.recipe(name)["eval"]["suites"]
        return {
            t["dataset"]: dataset_file(t["dataset"])
            for s in suites
            for t in self.config["suites"][s]
            if t.get("dataset")
        }

    def decontaminated_dir(self, name: str) -> str:
        """The contamination stage's filtered training rows: <dir>/<part>.jsonl per training stage."""
        return f"results/{name}/data/decontaminated"

    def contamination_inputs(self, name: str) -> dict[str, str]:
        """Mixture train files (keys = parts) and eval datasets (keys `eval:<name>`) the gate reads."""
        inputs = {stage: f"results/{name}/data/{stage}.jsonl" for stage in self.training_stages(name)}
        inputs.update({f"eval:{k}": v for k, v in self.eval_datasets(name).items()})
        return inputs

    def mixture_datasets(self, name: str, part: str) -> dict[str, str]:
        return {i["dataset"]: dataset_file(i["dataset"]) for i in self.recipe(name)["data"][part]["sources"]}

    def upstream_recipes(self, name: str) -> list[str]:
        """The recipe and every recipe whose outputs it builds on (adapter_from, recipe: models and merge targets,
        combined adapters), each once, in discovery order."""
        order, todo = [], [name]
        while todo:
            current = todo.pop(0)
            if current in order:
                continue
            order.append(current)
            recipe = self.recipe(current)
            merge = recipe["stages"].get("merge") or {}
            refs = [
                recipe["model"],
                merge.get("into") or "",
                *(f"{RECIPE_REF_PREFIX}{a['recipe']}" for a in (merge.get("combine") or {}).get("adapters", [])),
            ]
            todo += [r[len(RECIPE_REF_PREFIX) :] for r in refs if r.startswith(RECIPE_REF_PREFIX)]
            todo += [merge["adapter_from"]] if merge.get("adapter_from") else []
        return order

    def datasets_read(self, name: str) -> list[str]:
        """Every dataset the recipe's build reads: its and its upstream recipes' mixtures, and its eval datasets."""
        names = [
            item
            for upstream in self.upstream_recipes(name)
            for part in self.training_stages(upstream)
            for item in self.mixture_datasets(upstream, part)
        ]
        return list(dict.fromkeys(names + list(self.eval_datasets(name))))

    def stage_records(self, name: str) -> dict[str, str]:
        """Provenance files of every stage that built the recipe's final model, for eval.json."""
        records = {}
        for stage in self.training_stages(name):
            records[f"data.{stage}"] = f"results/{name}/data/{stage}_report.json"
            records[stage] = f"{self.stage_dir(name, stage)}/provenance.json"
            if self.is_adapter(name, stage):  # every adapter stage is merged (stage_model)
                records[f"merge.{stage}"] = f"{self.merged_dir(name, stage)}/provenance.json"
        if self.adapter_source(name):
            records["merge.sft"] = f"{self.merged_dir(name, 'sft')}/provenance.json"
        records["evaluate.final"] = f"{self.eval_dir(self.final_model(name), name)}/metrics.provenance.json"
        model = self.recipe(name)["model"]
        if model.startswith(RECIPE_REF_PREFIX):  # the recipe whose output this one starts from (DPO: its SFT)
            upstream = self.stage_records(model[len(RECIPE_REF_PREFIX) :])
            records.update({f"start.{key}": path for key, path in upstream.items() if key != "evaluate.final"})
        return records

    # ---- what each rule reads from the config: the rule's `params:` hash, so an edit reruns the rules that read it
    # (and, through their outputs, what depends on them) and nothing upstream or beside them

    def mixture_settings(self, name: str, part: str) -> dict:
        """The `mixture` rule: the recipe's data.<part> section and the entries of the datasets it draws from."""
        mixture = self.recipe(name)["data"][part]
        return {
            "mixture": mixture,
            "datasets": {i["dataset"]: self.config["datasets"][i["dataset"]] for i in mixture["sources"]},
        }

    def _suites(self, name: str) -> dict:
        suites = self.recipe(name)["eval"]["suites"]
        return {s: self.config["suites"][s] for s in suites}

    def gate_settings(self, name: str) -> dict:
        """The `contamination` rule: the gate's settings, the parts it filters and the eval items it checks against
        (suites and the entries of their datasets); the rows themselves are its input files."""
        suites = self._suites(name)
        return {
            "contamination": _without_runtime(self.recipe(name)["contamination"]),
            "parts": self.training_stages(name),
            "suites": suites,
            "datasets": {
                t["dataset"]: self.config["datasets"][t["dataset"]]
                for tasks in suites.values()
                for t in tasks
                if t.get("dataset")
            },
        }

    def training_settings(self, name: str, stage: str) -> dict:
        """The `train` rule: the stage's settings and the chat format its rows are rendered in."""
        return {
            "stage": _without_runtime(self.recipe(name)["stages"][stage]),
            "chat_format": self.recipe(name)["chat_format"],
        }

    def merge_settings(self, name: str, stage: str) -> dict:
        """The `merge` rule: dtype, 4-bit dequantization and the weighted combination of adapters."""
        return {
            "dtype": self.merge_dtype(name, stage),
            "dequantize": self.merge_dequantize(name, stage),
            "combination": self.merge_combination(name, stage),
        }

    def rule_hash(self, rule: str, name: str, **wildcards: str) -> str:
        """settings_hash of what `rule` reads for recipe `name` (wildcards: part or stage). The evaluate rule
        carries none: its output path holds the model key and the suite hash (eval_dir)."""
        settings = {
            "mixture": lambda: self.mixture_settings(name, wildcards["part"]),
            "contamination": lambda: self.gate_settings(name),
            "train": lambda: self.training_settings(name, wildcards["stage"]),
            "merge": lambda: self.merge_settings(name, wildcards["stage"]),
        }[rule]()
        return settings_hash(settings)

    # ---- Birbal's Natural Instructions sampling: datasets with `source: ni_sampling` (menagerie.data.ni_sampling)

    def ni_datasets(self) -> list[str]:
        return [name for name, entry in self.config["datasets"].items() if entry.get("source") == "ni_sampling"]

    def ni_predictions(self, name: str) -> str:
        """The base model's predictions an ni_sampling dataset is drawn by (shared by every dataset with the same
        tasks, model, selection and inference settings)."""
        from menagerie.ni_settings import predictions_key

        return f"resources/ni/{predictions_key(self.config, name)}/predictions.jsonl"

    def ni_dataset_for_key(self, key: str) -> str:
        """The first ni_sampling dataset whose predictions live under resources/ni/<key>/ (its settings make them)."""
        found = [n for n in self.ni_datasets() if self.ni_predictions(n) == f"resources/ni/{key}/predictions.jsonl"]
        if not found:
            raise KeyError(f"no ni_sampling dataset has predictions key '{key}'")
        return found[0]

    def ni_predict_inputs(self, key: str) -> dict[str, str]:
        """Task rows and base model of the predictions under resources/ni/<key>/."""
        entry = self.config["datasets"][self.ni_dataset_for_key(key)]
        return {"tasks": dataset_file(entry["tasks"]), "model": model_dir(entry["model"])}

    def ni_report(self, name: str) -> str:
        return f"resources/datasets/{name}_report.json"
