"""Build hook: compile the simulation's hot modules with mypyc (metadata is in pyproject.toml).

The Python sources are the only sources. ``pip install .`` additionally compiles the modules
in ``HOT`` (the per-I/O path of every I/O experiment) to one C extension with mypyc, which
uses their type annotations: classes become native classes (attributes in C struct fields,
methods called through a vtable), annotated ints are unboxed where they fit, and calls
between compiled modules are C calls. The annotations are therefore checked (``mypy src``
passes), and ``tests/test_compiled.py`` checks that the compiled build prints byte-identical
demo results. mypyc over Cython: Cython compiled the same untyped code 25% shorter in
instructions but no faster on a Zen 3 VM, its larger code missing the L2 (README).

The discrete-event kernel (``passthru.sim``) stays Python: pure, it runs as fast as the
Cython build did (benchmarks/bench_sim.py: 248 k against 247 k customers/s, 3.2-4.0x SimPy),
and it relies on CPython object tricks (``object.__new__`` on slotted classes) that mypyc's
native classes refuse.

Editable installs (``pip install -e .``) and ``PASSTHRU_PURE=1`` skip compiling, so an edit to
a source file takes effect at once (an extension next to its .py would shadow it). Without a
working C compiler the build says so and installs pure Python.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The modules an I/O experiment spends its time in (benchmarks/bench_nvme.py --profile).
HOT = [
    "passthru/guest/kernel.py",
    "passthru/guest/drivers/nvme.py",
    "passthru/guest/drivers/virtio_blk.py",
    "passthru/hw/memory.py",
    "passthru/hw/devices/nvme/controller.py",
    "passthru/hw/devices/nvme/namespace.py",
    "passthru/hw/devices/nvme/queues.py",
    "passthru/hw/devices/virtio/blk.py",
    "passthru/hw/devices/virtio/virtqueue.py",
    "passthru/hw/iommu/vtd/entries.py",
    "passthru/hw/iommu/vtd/intremap.py",
    "passthru/hw/iommu/vtd/translate.py",
    "passthru/hw/iommu/vtd/unit.py",
    "passthru/hv/cpu.py",
    "passthru/hv/host.py",
    "passthru/hv/vfio.py",
    "passthru/hv/vm.py",
    "passthru/hv/backends/nvme_paths.py",
    "passthru/hv/backends/virtio_blk.py",
    "passthru/scenarios/fio.py",
    "passthru/scenarios/io_path.py",
]


def _pure() -> bool:
    editable = any(cmd in sys.argv for cmd in ("editable_wheel", "develop"))
    return editable or os.environ.get("PASSTHRU_PURE") == "1"


def _extensions() -> list:
    commands = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    if _pure() or (commands and commands[0] in ("egg_info", "dist_info")):
        return []  # nothing to compile (metadata needs no extensions: spares a mypy run)
    from mypyc.build import mypycify

    # One group: calls between the hot modules stay native. Paths relative to src/, where
    # mypy resolves the passthru package (pyproject.toml [tool.mypy]).
    return mypycify([os.path.join("src", path) for path in HOT], opt_level="3",
                    group_name="passthru_hot")


class BuildHotModules(build_ext):
    """``build_ext`` that skips the hot modules for pure-Python installs, and falls back to
    pure Python (with a warning) when the C build fails."""

    def run(self) -> None:
        if getattr(self, "editable_mode", False) or _pure():
            print("passthru: pure-Python install (editable or PASSTHRU_PURE=1), nothing compiled")
            self.extensions = []
            return
        self.parallel = self.parallel or os.cpu_count()
        try:
            super().run()
        except Exception as exc:  # no compiler, or it failed: the .py files still install
            print(f"passthru: WARNING: compiling the hot modules failed ({exc}); "
                  "installing pure Python", file=sys.stderr)
            for path in self.get_outputs():  # none half-built: the modules link to one group
                if os.path.exists(path):
                    os.remove(path)
            self.extensions = []

    def get_outputs(self) -> list[str]:
        return super().get_outputs() if self.extensions else []


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildHotModules})
