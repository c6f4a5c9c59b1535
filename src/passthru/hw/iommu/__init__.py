"""IOMMU models. ``vtd`` is Intel VT-d (legacy mode DMA and interrupt remapping).

The seam other layers use is ``Translator``: a DMA translator that returns a ``Translation``
or a ``FaultRecord`` and never raises for a guest-visible outcome.
"""

from __future__ import annotations

from typing import Protocol

from passthru.hw.iommu.vtd import (
    DmarUnit,
    FaultReason,
    FaultRecord,
    InterruptResult,
    Translation,
)


class Translator(Protocol):
    """Translates a DMA request from ``source_id`` (PCI requester id) at ``iova``."""

    def translate(
        self, source_id: int, iova: int, is_write: bool = False
    ) -> Translation | FaultRecord: ...


__all__ = [
    "DmarUnit",
    "FaultReason",
    "FaultRecord",
    "InterruptResult",
    "Translation",
    "Translator",
]
