"""The mypyc-compiled hot modules (``setup.py``'s ``HOT``) behave exactly as their Python
sources: the demo's JSON is byte-identical compiled and pure. Skipped on a pure-Python
install (editable, or ``PASSTHRU_PURE=1``), where there is nothing compiled to compare."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import passthru

ROOT = Path(__file__).resolve().parents[1]
COMPILED = passthru.is_compiled()
needs_compiled = pytest.mark.skipif(
    not COMPILED, reason="pure-Python install (editable or PASSTHRU_PURE=1): nothing compiled")


def _hot_modules() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "HOT":
            return [p[:-3].replace("/", ".") for p in ast.literal_eval(node.value)]
    raise AssertionError("setup.py has no HOT list")


def test_hot_list_names_existing_modules() -> None:
    names = _hot_modules()
    assert len(names) == len(set(names)) > 10
    for name in names:
        assert (ROOT / "src" / (name.replace(".", "/") + ".py")).is_file(), name


@needs_compiled
def test_hot_classes_are_native() -> None:
    import inspect

    from passthru.hv.cpu import Cpu
    from passthru.hv.vm import Vm
    from passthru.hw.devices.nvme.controller import NvmeController
    from passthru.hw.iommu.vtd.unit import DmarUnit

    # Classes without __slots__ in their source: only a native class has no instance dict.
    for cls in (DmarUnit, Vm, NvmeController):
        assert "__dict__" not in dir(cls), f"{cls.__qualname__} is not a native class"
    # A native class's methods are compiled, not Python functions (Cpu has __slots__ anyway).
    assert not inspect.isfunction(Cpu.book)


@needs_compiled
def test_every_hot_module_is_compiled() -> None:
    for name in _hot_modules():
        path = importlib.import_module(name).__file__
        assert path is not None and path.endswith(".so"), f"{name} is not compiled: {path}"


def _demo(tmp_path: Path, pure: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pure:
        env["PYTHONPATH"] = str(ROOT / "src")  # the sources: no extension modules there
    which = subprocess.run([sys.executable, "-c", "import passthru; "
                            "print(passthru.is_compiled())"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert which == str(not pure), which
    out = subprocess.run([sys.executable, "-m", "passthru.cli.main", "demo", "--json",
                          "--ios", "200", "--seed", "3"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


@needs_compiled
def test_demo_is_byte_identical_compiled_and_pure(tmp_path: Path) -> None:
    compiled = _demo(tmp_path, pure=False)
    assert '"path": "passthrough"' in compiled
    assert compiled == _demo(tmp_path, pure=True)
