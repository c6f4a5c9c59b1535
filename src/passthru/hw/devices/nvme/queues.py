"""NVMe submission and completion queue state (NVMe Base 2.0, 3.3.1 and 4.1).

A queue is a ring of ``size`` entries in host memory at ``base`` (physically contiguous:
the PC bit is required here). The host owns the SQ tail and the CQ head and tells the
controller through doorbells; the controller owns the SQ head (reported in every CQE as
SQHD) and the CQ tail. A CQ starts with phase tag 1 and inverts it at every wrap (4.6, "P"),
so the host recognises new entries without reading a controller register.

Left out: non-contiguous queues (PRP-list backed), queue priorities / weighted round robin
arbitration (the controller drains SQs in doorbell order), and the shadow doorbell buffer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SubmissionQueue:
    qid: int
    base: int
    size: int
    cqid: int
    head: int = 0  # controller's next entry to fetch
    tail: int = 0  # last tail the host rang

    def __repr__(self) -> str:
        return (f"<SQ{self.qid} base={self.base:#x} size={self.size} cq={self.cqid} "
                f"head={self.head} tail={self.tail}>")

    @property
    def empty(self) -> bool:
        return self.head == self.tail


@dataclass(slots=True)
class CompletionQueue:
    qid: int
    base: int
    size: int
    iv: int  # MSI-X vector
    ien: bool = True
    head: int = 0  # last head the host rang
    tail: int = 0  # controller's next slot to post
    phase: int = 1

    def __repr__(self) -> str:
        return (f"<CQ{self.qid} base={self.base:#x} size={self.size} iv={self.iv} "
                f"head={self.head} tail={self.tail} phase={self.phase}>")

    @property
    def full(self) -> bool:
        return (self.tail + 1) % self.size == self.head

    def advance(self) -> None:
        self.tail += 1
        if self.tail == self.size:
            self.tail = 0
            self.phase ^= 1
