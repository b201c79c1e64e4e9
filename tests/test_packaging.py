"""The wheel is what ships: it must hold every package and the whole rule pack, build without
setuptools' warnings about folders left out of `packages`, and work installed on its own (not
from this checkout)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile

import pytest

from conftest import ROOT

# Folders of package data: setuptools counts each as a (namespace) package to be listed.
DATA_PACKAGES = {"rmmscan.data", "rmmscan.rules.bundled.tests"}


def _packages_on_disk() -> set[str]:
    found = {"rmmscan.rules.bundled", *DATA_PACKAGES}
    for init in (ROOT / "agent").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT / "agent").parts))
    return found


def test_every_package_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    assert set(config["tool"]["setuptools"]["packages"]) == _packages_on_disk()


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> tuple[zipfile.ZipFile, str]:
    """The wheel, and everything the build printed (-v: the backend's warnings included)."""
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (path,) = out.glob("rmmscan-*.whl")
    return zipfile.ZipFile(path), proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel(build) -> zipfile.ZipFile:
    return build[0]


def test_the_build_warns_of_no_package_left_out(build):
    log = build[1]
    assert "Successfully built rmmscan" in log or "Saved " in log, log[-2000:]
    for warning in ("Package would be ignored", "is absent from the `packages` configuration",
                    "not in `packages`", "as data is deprecated"):  # fmt: skip
        assert warning not in log, warning


def test_the_wheel_carries_the_project_license(wheel):
    names = set(wheel.namelist())
    (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    text = wheel.read(meta).decode("utf-8")
    assert "License-Expression: Apache-2.0" in text
    (license_file,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert wheel.read(license_file) == (ROOT / "LICENSE").read_bytes()
    assert b"Version 2.0, January 2004" in (ROOT / "LICENSE").read_bytes()


def test_wheel_holds_the_rule_pack_and_its_tests(wheel):
    names = set(wheel.namelist())
    for rule in (ROOT / "rules").glob("*.yaml"):
        assert f"rmmscan/rules/bundled/{rule.name}" in names
        assert f"rmmscan/rules/bundled/tests/{rule.name}" in names, f"no test rows for {rule.name}"
    assert "rmmscan/rules/bundled/LICENSE-sentinel-rmm-filesig" in names
    assert "rmmscan/data/distrust.json" in names


def test_installed_wheel_loads_its_rules_and_scans(wheel, tmp_path):
    """Unpacked on its own (no checkout on sys.path): the bundled pack loads and its tests pass."""
    site = tmp_path / "site"
    wheel.extractall(site)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import rmmscan, rmmscan.rules.pack as rb, rmmscan.rules.testrows as rt;"
        "assert rmmscan.__file__.startswith(sys.argv[1]), rmmscan.__file__;"
        "pack = rb.load_pack(); report = rt.run_tests(pack);"
        "assert report.ok, (report.problems, report.failures[:3]);"
        "print(len(pack.rules), len(report.results))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(site)], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    count = int(proc.stdout.split()[0])
    assert count == len(list((ROOT / "rules").glob("*.yaml")))
