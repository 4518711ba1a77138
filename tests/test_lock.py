"""uv.lock holds one coherent CUDA stack (the `cuda` extra) next to the CPU one (`cpu`), checked without a GPU:
versions agree with each other's published pins, the GPU export has no path of this machine."""

from __future__ import annotations

import re

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from menagerie.hpc.lockfile import GPU_STACK_REQUIRES, find_uv, locked_packages, pins, uv_export


@pytest.fixture(scope="module")
def gpu_pins():
    if find_uv() is None:
        pytest.skip("uv not available (make env)")
    return dict(p.split("==", 1) for p in pins(uv_export("--no-hashes")))


def test_gpu_stack_versions_agree_with_each_others_pins(gpu_pins):
    for (name, version), requires in GPU_STACK_REQUIRES.items():
        assert gpu_pins[name] == version, f"{name}: locked {gpu_pins.get(name)}, pins recorded for {version}"
        for dep, spec in requires.items():
            assert Version(gpu_pins[dep]) in SpecifierSet(spec), (
                f"{name} {version} requires {dep}{spec}, locked {gpu_pins[dep]}"
            )


def test_gpu_export_has_no_local_path_and_pypi_torch():
    if find_uv() is None:
        pytest.skip("uv not available (make env)")
    text = uv_export()
    assert not re.search(r"file://|/opt/|\.whl\b(?!#)|^-e |^\./", text, flags=re.M), "a machine-local path"
    assert "bitsandbytes==0.50.2" in text and "+cpu" not in text


def test_lock_has_one_torch_version_in_two_builds():
    """The CPU build (local wheel, `cpu` extra) and the CUDA build (PyPI) are the same torch release."""
    torches = [p for p in locked_packages() if p["name"] == "torch"]
    versions = {p["version"] for p in torches}
    assert {Version(v).public for v in versions} == {"2.13.0"}, versions
    pypi = [p for p in torches if p["source"].get("registry", "").startswith("https://pypi.org")]
    assert len(pypi) == 1 and "+" not in pypi[0]["version"]
    local = [p for p in torches if p is not pypi[0]]
    assert all(Version(p["version"]).local == "cpu" for p in local)
