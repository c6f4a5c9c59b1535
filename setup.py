"""Build hook: compile the simulation's hot modules with Cython (metadata is in pyproject.toml).

The Python sources are the only sources. ``pip install .`` additionally compiles the modules
in ``HOT`` (the inner loop of every I/O experiment) to C extensions with Cython, unchanged:
``annotation_typing=False`` keeps Python's semantics (annotations are not enforced as C
types), so compiled and pure runs give identical results; ``tests/test_compiled.py`` checks
that. Each extension is optional: if a module fails to compile (no C compiler), that module
stays pure Python.

Editable installs (``pip install -e .``) and ``PASSTHRU_PURE=1`` skip compiling, so an edit to
a source file takes effect at once (an extension next to its .py would shadow it).
"""

from __future__ import annotations

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The modules an I/O experiment spends its time in (benchmarks/bench_nvme.py --profile).
HOT = [
    "passthru/sim/kernel.py",
    "passthru/sim/events.py",
    "passthru/sim/resources.py",
    "passthru/guest/kernel.py",
    "passthru/guest/drivers/nvme.py",
    "passthru/guest/drivers/virtio_blk.py",
    "passthru/hw/memory.py",
    "passthru/hw/devices/nvme/controller.py",
    "passthru/hw/devices/nvme/namespace.py",
    "passthru/hw/devices/virtio/blk.py",
    "passthru/hw/devices/virtio/virtqueue.py",
    "passthru/hw/iommu/vtd/entries.py",
    "passthru/hw/iommu/vtd/intremap.py",
    "passthru/hw/iommu/vtd/translate.py",
    "passthru/hw/iommu/vtd/unit.py",
    "passthru/hv/cpu.py",
    "passthru/hv/host.py",
    "passthru/hv/vm.py",
    "passthru/hv/backends/nvme_paths.py",
    "passthru/hv/backends/virtio_blk.py",
    "passthru/scenarios/fio.py",
    "passthru/scenarios/io_path.py",
]


def _extensions() -> list[Extension]:
    return [Extension(path[:-3].replace("/", "."), [os.path.join("src", path)], optional=True)
            for path in HOT]


class BuildHotModules(build_ext):
    """``build_ext`` that Cythonizes ``HOT`` first, or skips it for pure-Python installs."""

    def run(self) -> None:
        if getattr(self, "editable_mode", False) or os.environ.get("PASSTHRU_PURE") == "1":
            print("passthru: pure-Python install (editable or PASSTHRU_PURE=1), nothing compiled")
            return
        from Cython.Build import cythonize

        generated = cythonize(
            self.extensions, build_dir=os.path.join(self.build_temp, "cython"), quiet=True,
            nthreads=os.cpu_count() or 1, language_level=3,
            compiler_directives={"annotation_typing": False, "binding": True})
        c_sources = {ext.name: ext.sources for ext in generated}
        for ext in self.extensions:  # keep setuptools' own Extension objects (finalized)
            ext.sources = c_sources[ext.name]
        self.parallel = self.parallel or os.cpu_count()  # compile the C files in parallel too
        super().run()

    def get_outputs(self) -> list[str]:
        if getattr(self, "editable_mode", False) or os.environ.get("PASSTHRU_PURE") == "1":
            return []
        return super().get_outputs()


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildHotModules})
