# menagerie: `make run` builds the default tiny twin end to end; `make test` runs the test suite.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

RECIPE ?= tiny-tulu2-dpo
CORES ?= all
CONFIG ?=
SNAKEMAKE_ARGS ?=
PYTEST_ARGS ?=

UV_VERSION := 0.13.9
UV := .tools/uv/bin/uv
VENV := .venv
PY := $(VENV)/bin/python

# Every cache stays inside the project's ignored folders, so a run leaves the machine as it found it.
export HF_HOME := $(CURDIR)/.cache/hf
export HF_HUB_OFFLINE ?= 1
export XDG_CACHE_HOME := $(CURDIR)/.cache
export UV_CACHE_DIR := $(CURDIR)/.cache/uv
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export TRITON_CACHE_DIR := $(CURDIR)/.cache/triton
export TORCHINDUCTOR_CACHE_DIR := $(CURDIR)/.cache/inductor
export UV_PYTHON_DOWNLOADS := never
export TOKENIZERS_PARALLELISM := false

.PHONY: help env run lint test test-fast test-shared test-default-build plan dryrun lock clean slurm-test envs containers containers-pin verify bundle check report
help:
	@echo "make run [RECIPE=tiny-tulu2-dpo|tiny-platypus2|tiny-birbal]  build results/<recipe>/eval.json"
	@echo "make run RECIPE=my-recipe CONFIG=my.yaml                   a recipe from your own config file"
	@echo "make test                                                   run the test suite (pytest)"
	@echo "make dryrun RECIPE=tulu2-dpo-7b                             print a real recipe's DAG"
	@echo "make plan [RECIPE=tulu2-70b]                                memory and time per stage (all real recipes)"
	@echo "make bundle RECIPE=<name> [WITH_WEIGHTS=1]                  results/<recipe>/bundle/<recipe>-<commit>.tar.gz"
	@echo "make check BUNDLE=<path> [MODEL=<dir>] [TASKS=a,b]          an organiser's check of a bundle"
	@echo "make report [RECIPE=<name>] [CONFIG=my.yaml]                results/<recipe>/report.html (snakemake --report)"
	@echo "make env | lock | clean"

$(UV):
	python3 -m pip install --quiet --disable-pip-version-check --target .tools/uv uv==$(UV_VERSION)

# Lint tools, pinned, beside uv (not in the lock: they check the code, the stages never import them)
RUFF_VERSION := 0.17.6
MYPY_VERSION := 2.4.1
LINT := .tools/lint
$(LINT)/.ruff-$(RUFF_VERSION)-mypy-$(MYPY_VERSION):
	rm -rf $(LINT) && python3 -m pip install --quiet --disable-pip-version-check --target $(LINT) ruff==$(RUFF_VERSION) mypy==$(MYPY_VERSION)
	touch $@

# The environment is the uv lock, exactly: EXTRA=cpu (default; torch from the machine's CPU wheel, pyproject
# [tool.uv.sources]) or EXTRA=cuda (GPU machines and cluster login nodes: torch's CUDA build, vLLM, bitsandbytes).
EXTRA ?= cpu
$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --extra $(EXTRA) --python "$$(command -v python3)"
	touch $@

env: $(VENV)/.synced

lock: | $(UV)
	$(UV) lock

# scripts/run.py: one build per directory (a second is refused), Snakemake's stale locks after kill -9 removed when no
# workflow process is alive, CONFIG passed as --configfile=<file> (SNAKEMAKE_ARGS may then hold targets).
run: env
	$(PY) scripts/run.py --recipe '$(RECIPE)' --cores '$(CORES)' $(if $(CONFIG),--configfile '$(CONFIG)') -- $(SNAKEMAKE_ARGS)
	@echo "eval: results/$(RECIPE)/eval.json   leaderboard: results/leaderboard.md"

plan: env   ## memory and time per stage (menagerie/plan.py); RECIPE=<name>, or every real recipe when unset
	$(PY) -m menagerie plan $(if $(filter-out file default,$(origin RECIPE)),$(RECIPE))

dryrun: env
	$(VENV)/bin/snakemake -n --cores $(CORES) results/$(RECIPE)/eval.json $(if $(CONFIG),--configfile='$(CONFIG)') $(SNAKEMAKE_ARGS)

lint: env $(LINT)/.ruff-$(RUFF_VERSION)-mypy-$(MYPY_VERSION)   ## ruff, mypy, snakemake --lint, import layers (README "Lint")
	$(LINT)/bin/ruff check menagerie scripts .ci
	$(LINT)/bin/ruff format --check menagerie scripts .ci tests bench
	PYTHONPATH=$(LINT) python3 -m mypy
	$(PY) .ci/snakemake_lint.py
	$(PY) -m pytest -q -p no:cacheprovider tests/test_layers.py   # imports follow the pipeline (README "Layout")

test: env
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: env
	$(PY) -m pytest -m "not slow and not shared" $(PYTEST_ARGS)

test-shared: env   ## the opt-in tests on ../shared/data (lm-eval CLI parity on real samples: ~25 min)
	$(PY) -m pytest -m shared $(PYTEST_ARGS)

test-default-build: env   ## opt-in: the default build at full size, full fine-tuning and its held-out gain (~12 min)
	$(PY) -m pytest -s -m default_build tests/e2e/test_default_build.py $(PYTEST_ARGS)

clean:
	rm -rf results logs .snakemake resources/config

# --- HPC: SLURM, containers, conda envs, verification (README "Running on a SLURM cluster")
slurm-test: env   ## a real single-node SLURM cluster (root + apt packages slurm-wlm slurmdbd munge mariadb-server)
	$(PY) -m pytest -m slurm -q -rs tests/test_slurm.py $(PYTEST_ARGS)

envs: env   ## containers/requirements-<stage>.txt and envs/<stage>.yaml from uv.lock
	$(PY) scripts/export_envs.py

CONTAINER_STAGES := train eval
containers: envs
	@command -v apptainer >/dev/null || { echo "make containers: apptainer is not installed here; build on a machine with apptainer >= 1.2 and copy containers/*.sif (or push them and set config.yaml containers: to oras://...@sha256:<digest>)" >&2; exit 2; }
	for s in $(CONTAINER_STAGES); do apptainer build --force --build-arg GIT_COMMIT=$$(git rev-parse HEAD) --build-arg LOCK_SHA256=$$(sha256sum uv.lock | cut -d' ' -f1) containers/$$s.sif containers/$$s.def; done

containers-pin:   ## re-resolve the base image digest of containers/*.def (needs registry access and crane, skopeo or docker)
	$(PY) scripts/pin_base_image.py containers/*.def

verify: env   ## recompute a built recipe's hashes against its provenance
	$(PY) -m menagerie verify results/$(RECIPE)

report: env   ## results/<recipe>/report.html: Snakemake's HTML report of a built recipe (loss curves, leaderboard)
	$(PY) -m menagerie report '$(RECIPE)' $(if $(CONFIG),--configfile '$(CONFIG)') $(if $(SNAKEMAKE_ARGS),-- $(SNAKEMAKE_ARGS))

# --- competition-style reproduction (README "Reproduction bundles")
BUNDLE ?=
MODEL ?=
TASKS ?=
WITH_WEIGHTS ?=
# config overlays the run used (snakemake --configfile), on top of config.yaml
CONFIGFILES ?=
bundle: env   ## results/<recipe>/bundle/<recipe>-<commit>.tar.gz: everything needed to judge and re-check the run
	$(PY) scripts/bundle.py build --recipe $(RECIPE) $(if $(WITH_WEIGHTS),--with-weights) $(foreach c,$(CONFIGFILES),--configfile $(c))

check: env   ## verify a bundle (hashes, schema, config, budget, hardware); with MODEL, re-run its evaluation
	@test -n "$(BUNDLE)" || { echo "make check: set BUNDLE=<path to a bundle .tar.gz>" >&2; exit 2; }
	$(PY) scripts/bundle.py check $(BUNDLE) $(if $(MODEL),--model $(MODEL)) $(if $(TASKS),--tasks $(TASKS)) $(foreach c,$(CONFIGFILES),--configfile $(c))
