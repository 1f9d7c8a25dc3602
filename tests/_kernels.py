"""Real Jupyter kernels for tests (not a test module): the current environment's ipykernel, and an
ipykernel 6 environment built once per machine.

The ipykernel 6 environment is a plain virtual environment (no ``--system-site-packages``: that
would see the base interpreter's packages, not those of the virtualenv or conda env running the
tests) holding the project's own dependencies from ``pyproject.toml`` plus ``ipykernel>=6.29,<7``.
It is cached under ``<user cache dir>/alpaca_nb/test-kernels/<key>`` (or under the directory named
by ``ALPACA_NB_TEST_KERNELS_DIR``), where the key hashes the Python version, the base interpreter and
those requirements, so every checkout and worktree of the project on a machine shares it and a
change of requirements builds a new one. The project itself is not installed there: the kernelspec
that :func:`start_kernel` writes puts the checkout under test on ``PYTHONPATH``, so the kernel runs
the code of the checkout that runs the tests, never a stale copy.

Use it from a test module::

    from _kernels import ipykernel6_python, start_kernel   # ipykernel6_python is a fixture

    def test_something(ipykernel6_python, tmp_path):
        km, kc = start_kernel(ipykernel6_python, tmp_path)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import platformdirs
import pytest

ROOT = Path(__file__).resolve().parents[1]
IPYKERNEL6 = "ipykernel>=6.29,<7"
# pip output that means the package index cannot be reached (a skip), not that the install is wrong
NETWORK_HINTS = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
                 "Could not fetch URL", "ConnectionError", "Max retries exceeded",
                 "Name or service not known")


def _requirements() -> list[str]:
    """The project's runtime dependencies (pyproject.toml) plus ipykernel 6."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return sorted(project["dependencies"]) + [IPYKERNEL6]


def _interpreter(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def kernel_envs_dir() -> Path:
    """Where the cached kernel environments live (``ALPACA_NB_TEST_KERNELS_DIR`` overrides)."""
    configured = os.environ.get("ALPACA_NB_TEST_KERNELS_DIR")
    return Path(configured) if configured else Path(platformdirs.user_cache_dir("alpaca_nb")) / "test-kernels"


def _ipykernel_major(python: Path) -> str | None:
    done = subprocess.run([str(python), "-c", "import ipykernel; print(ipykernel.__version__)"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip().split(".")[0] if done.returncode == 0 else None


def build_ipykernel6_env() -> Path:
    """The interpreter of the ipykernel 6 environment, built on first use (a few minutes, it
    downloads the project's dependencies) and reused afterwards.

    Builds go to a private directory renamed into place when complete, so concurrent test
    sessions never see a half-built environment. Skips the test when the package index is
    unreachable; raises ``AssertionError`` with pip's output when the install fails otherwise.
    """
    requirements = _requirements()
    base = getattr(sys, "_base_executable", sys.executable)
    key = hashlib.sha256(json.dumps([sys.version_info[:2], os.path.realpath(base), requirements])
                         .encode()).hexdigest()[:16]
    home = kernel_envs_dir()
    venv = home / f"ipykernel6-py{sys.version_info[0]}{sys.version_info[1]}-{key}"
    if (venv / "ready").exists() and _ipykernel_major(_interpreter(venv)) == "6":
        return _interpreter(venv)
    home.mkdir(parents=True, exist_ok=True)
    building = home / f".building-{uuid.uuid4().hex}"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, capture_output=True)
        done = subprocess.run([str(_interpreter(building)), "-m", "pip", "install", "-q",
                               "--disable-pip-version-check", *requirements],
                              capture_output=True, text=True, timeout=1200, check=False)
        if done.returncode != 0:
            output = done.stdout + done.stderr
            if any(hint in output for hint in NETWORK_HINTS):
                pytest.skip("the package index is unreachable, so the ipykernel 6 environment cannot "
                            f"be built: {output.strip().splitlines()[-1][:300]}")
            raise AssertionError(f"pip install of {requirements} failed:\n{output[-3000:]}")
        (building / "ready").write_text("\n".join(requirements) + "\n", encoding="utf-8")
        if venv.exists():                      # a broken or half-deleted earlier build
            shutil.rmtree(venv, ignore_errors=True)
        try:
            building.rename(venv)
        except OSError:                        # another session finished first: use its build
            if not (venv / "ready").exists():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    python = _interpreter(venv)
    assert _ipykernel_major(python) == "6", f"{python} does not have ipykernel 6"
    return python


@pytest.fixture(scope="session")
def ipykernel6_python() -> str:
    """Path of a Python interpreter whose ipykernel is 6.x (see :func:`build_ipykernel6_env`)."""
    return str(build_ipykernel6_env())


def write_kernelspec(kernels_dir: Path, python: str, name: str = "anb-test") -> str:
    """Write a kernelspec ``name`` under ``kernels_dir`` that runs ``python``'s ipykernel with this
    checkout importable; returns the kernel name."""
    spec = Path(kernels_dir) / name
    spec.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "alpaca_nb test", "language": "python", "env": {"PYTHONPATH": path}}))
    return name


def start_kernel(python: str, tmp_path: Path, *, timeout: float = 120):
    """Start a kernel on ``python`` (cwd: the checkout) and return ``(kernel_manager, client)``
    with the client's channels started and the kernel ready; the caller shuts both down."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    kernels = Path(tmp_path) / "kernels"
    name = write_kernelspec(kernels, python)
    km = KernelManager(kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    km.start_kernel(cwd=str(ROOT))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=timeout)
    return km, kc
