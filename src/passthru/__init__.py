"""passthru: an executable model of a virtualization host doing IOMMU device passthrough.

The public API, by layer (DESIGN.md). Names resolve lazily, so `import passthru` stays cheap
for the CLI; `from passthru import Topology` imports only what it needs.
"""

from __future__ import annotations

import importlib
from typing import Any

from passthru.errors import (
    AssignmentError,
    ConfigError,
    DumpParseError,
    OutOfResources,
    PassthruError,
)

__version__ = "0.1.0"

_LAZY = {
    # sim
    "Environment": "passthru.sim",
    "Event": "passthru.sim",
    "Process": "passthru.sim",
    "Interrupt": "passthru.sim",
    "Resource": "passthru.sim",
    "Streams": "passthru.sim",
    # hw
    "HostMemory": "passthru.hw.memory",
    "FrameAllocator": "passthru.hw.frames",
    "AddrRange": "passthru.hw.ranges",
    "Topology": "passthru.hw.pci.topology",
    "PciFunction": "passthru.hw.pci.device",
    "Bar": "passthru.hw.pci.device",
    "AcsSpec": "passthru.hw.pci.device",
    "SriovSpec": "passthru.hw.pci.device",
    "AcsFlags": "passthru.hw.pci.regs",
    "PcieType": "passthru.hw.pci.regs",
    "Fabric": "passthru.hw.pci.fabric",
    "MemRequest": "passthru.hw.pci.fabric",
    "RouteKind": "passthru.hw.pci.fabric",
    "AddressType": "passthru.hw.pci.fabric",
    "DmarUnit": "passthru.hw.iommu.vtd.unit",
    "FaultReason": "passthru.hw.iommu.vtd.faults",
    "FaultRecord": "passthru.hw.iommu.vtd.faults",
    "Platform": "passthru.hw.platform",
    "DmaStatus": "passthru.hw.platform",
    # hv
    "IommuDriver": "passthru.hv.iommu_driver",
    "Host": "passthru.hv.host",
    "Vm": "passthru.hv.vm",
    "Vfio": "passthru.hv.vfio",
    "Costs": "passthru.hv.costs",
    # guest
    "GuestKernel": "passthru.guest.kernel",
    # analysis
    "compute_iommu_groups": "passthru.analysis.groups",
    "AcsOverride": "passthru.analysis.acs",
    "p2p_report": "passthru.analysis.p2p",
    # config / importers
    "load_host": "passthru.config",
    "load_lspci": "passthru.importers.lspci_topology",
    "parse_lspci": "passthru.importers.lspci",
}


def is_compiled() -> bool:
    """True when the per-I/O modules run compiled by mypyc (``pip install .``), False when
    they run as Python (editable install, ``PASSTHRU_PURE=1`` or ``PYTHONPATH=src``)."""
    from passthru.hw import memory  # one of setup.py's HOT modules

    return not memory.__file__.endswith(".py")


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'passthru' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "is_compiled",
    "AssignmentError",
    "ConfigError",
    "DumpParseError",
    "OutOfResources",
    "PassthruError",
    "__version__",
    *_LAZY,
]
