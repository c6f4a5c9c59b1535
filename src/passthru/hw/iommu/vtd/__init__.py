"""Intel VT-d (Virtualization Technology for Directed I/O) remapping hardware model.

Modules follow the spec's chapters: ``regs`` (ch. 10 registers as data), ``entries`` (ch. 9
data structures and 6.5.2 descriptors), ``faults`` (ch. 7), ``iotlb`` (6.1-6.2 caches),
``translate`` (ch. 3 DMA remapping), ``intremap`` (ch. 5 interrupt remapping) and ``unit``
(one DRHD tying them together). Legacy translation mode only: scalable mode, first-level and
nested translation, PASID and ATS/device-TLB are not modelled.
"""

from passthru.hw.iommu.vtd.entries import (
    AddressWidth,
    ContextEntry,
    DeliveryMode,
    Irte,
    RootEntry,
    Sq,
    Svt,
    TranslationType,
)
from passthru.hw.iommu.vtd.faults import FaultReason, FaultRecord, FaultRecorder
from passthru.hw.iommu.vtd.intremap import InterruptRemapper, InterruptResult
from passthru.hw.iommu.vtd.iotlb import ContextCache, Iotlb, Translation
from passthru.hw.iommu.vtd.translate import DmaRemapper
from passthru.hw.iommu.vtd.unit import DmarUnit, DmarUnitState

__all__ = [
    "AddressWidth",
    "ContextCache",
    "ContextEntry",
    "DeliveryMode",
    "DmaRemapper",
    "DmarUnit",
    "DmarUnitState",
    "FaultReason",
    "FaultRecord",
    "FaultRecorder",
    "InterruptRemapper",
    "InterruptResult",
    "Iotlb",
    "Irte",
    "RootEntry",
    "Sq",
    "Svt",
    "Translation",
    "TranslationType",
]
