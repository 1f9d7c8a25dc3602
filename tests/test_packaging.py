"""environment.yml (conda) must install what pyproject.toml (pip) installs, at the same minimums.

conda cannot run on the CI machine, so the file is checked by parsing it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
# PyPI name -> conda-forge name where they differ
CONDA_NAMES = {"msgpack": "msgpack-python", "exchange_calendars": "exchange-calendars", "redis": "redis-py"}
REQ = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*(>=\s*[0-9][0-9.]*)?")


def _parse(spec: str) -> tuple[str, str | None]:
    m = REQ.match(spec)
    assert m, f"cannot parse requirement {spec!r}"
    name, bound = m.group(1).lower(), m.group(2)
    return name, bound.replace(" ", "") if bound else None


def _pyproject() -> dict[str, str | None]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"]) + list(meta["optional-dependencies"]["test"])
    return dict(_parse(r) for r in reqs if not r.startswith("alpaca_nb"))


def _environment() -> tuple[dict[str, str | None], list[str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip.extend(dep.get("pip", []))
        else:
            name, bound = _parse(dep)
            conda[name] = bound
    return conda, pip


def test_every_pip_requirement_is_in_environment_yml_with_the_same_minimum():
    conda, pip = _environment()
    pip_names = {_parse(p)[0]: _parse(p)[1] for p in pip if not p.startswith("-e")}
    for name, bound in _pyproject().items():
        conda_name = CONDA_NAMES.get(name, name).lower()
        if conda_name in conda:
            assert conda[conda_name] == bound, f"{name}: pyproject {bound} vs environment.yml {conda[conda_name]}"
        else:
            assert name in pip_names, f"{name} from pyproject.toml is missing from environment.yml"
            assert pip_names[name] == bound, f"{name}: pyproject {bound} vs environment.yml {pip_names[name]}"


def test_environment_installs_the_package_itself_and_declares_python():
    conda, pip = _environment()
    assert "-e ." in pip
    assert "python" in conda


def test_every_runtime_dependency_has_a_lower_bound():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in meta["dependencies"]:
        assert ">=" in spec, f"{spec} has no lower bound"


def test_the_lowest_versions_ci_job_pins_exactly_the_lower_bounds():
    """.ci/constraints-lowest.txt (the second CI job) pins every runtime dependency at its bound."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds = {n: b.removeprefix(">=") for n, b in map(_parse, meta["dependencies"])}
    pins = {}
    for line in (ROOT / ".ci" / "constraints-lowest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    assert {n: Version(v) for n, v in pins.items()} == {n: Version(v) for n, v in bounds.items()}
