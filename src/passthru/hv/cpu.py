"""CPU time as a resource: one hardware thread (a vCPU, a host core, a device model's thread).

What is modelled
    A :class:`Cpu` executes one piece of work at a time, in the order the work was booked
    (FIFO, non-preemptive): ``book(ns)`` queues ``ns`` of work behind everything booked
    before and returns how long until it starts. It is a busy-until timestamp, so booking
    costs no event and an idle CPU adds no delay: when nothing overlaps (QD1) time advances
    exactly as if the work were a plain delay. ``busy_ns`` sums the work booked, for
    per-CPU utilisation.

    Callers apply an access's side effect when its work *starts* and then wait for the rest::

        wait = cpu.book(cost)
        if wait:
            yield wait      # the CPU is still busy with earlier work
        do_the_access()
        yield cost

What is left out
    Preemption (an interrupt handler queues behind work booked before it instead of
    interrupting it), priorities, SMT siblings, frequency changes and host scheduling of
    several threads on one core (every Cpu is its own hardware thread).
"""

from __future__ import annotations

from passthru.hv.costs import Costs
from passthru.sim import Environment


class Cpu:
    """One hardware thread's timeline: work booked on it runs serially, FIFO."""

    __slots__ = ("env", "name", "busy_until", "busy_ns")

    def __init__(self, env: Environment, name: str) -> None:
        self.env = env
        self.name = name
        self.busy_until = 0  # when the work booked so far is done
        self.busy_ns = 0  # total work booked

    def __repr__(self) -> str:
        return f"<Cpu {self.name} busy_until={self.busy_until} busy_ns={self.busy_ns}>"

    def book(self, ns: int) -> int:
        """Queue ``ns`` of work behind all booked work; the delay until it starts."""
        now = self.env.now
        start = self.busy_until
        if start < now:
            start = now
        self.busy_until = start + ns
        self.busy_ns += ns
        return start - now

    def delay(self, ns: int) -> int:
        """Queue ``ns`` of work; the delay until it is done (for callback-style code)."""
        return self.book(ns) + ns


def busy_by_name(cpus: list[Cpu]) -> dict[str, int]:
    """``{cpu.name: cpu.busy_ns}``: the per-CPU work counters a path reports."""
    return {cpu.name: cpu.busy_ns for cpu in cpus}


def aio_completion_ns(costs: Costs, thread: Cpu) -> int:
    """A device model's thread reaping one AIO completion: the eventfd wake-up only if the
    thread sleeps; a busy one reaps the event with those in hand (QEMU block/linux-aio.c
    qemu_laio_completion_cb)."""
    idle = thread.busy_until <= thread.env.now
    return costs.aio_event_ns + (costs.aio_wakeup_ns if idle else 0)
