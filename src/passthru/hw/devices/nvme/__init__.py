"""An NVMe controller model at register level (NVM Express Base Specification 2.0).

``regs``: BAR0 properties as data; ``queues``: SQ/CQ ring state; ``commands``: SQE/CQE
formats, opcodes, status codes, Identify data and PRP lists; ``namespace``: a sparse block
store with a latency/bandwidth/parallelism model and presets; ``controller``: the device.
"""

from passthru.hw.devices.nvme.controller import (
    ControllerState,
    DmaPort,
    Media,
    NamespaceMedia,
    NvmeController,
)
from passthru.hw.devices.nvme.namespace import PRESETS, MediaProfile, Namespace, media_profile

__all__ = [
    "PRESETS",
    "ControllerState",
    "DmaPort",
    "Media",
    "MediaProfile",
    "Namespace",
    "NamespaceMedia",
    "NvmeController",
    "media_profile",
]
