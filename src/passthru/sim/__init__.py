"""The ``sim`` layer: integer-nanosecond virtual time, processes, resources, random streams.

See :mod:`passthru.sim.kernel` for the scheduler (SimPy's design, int time),
:mod:`passthru.sim.units` for time units and :mod:`passthru.sim.streams` for seeded streams.
"""

from passthru.sim import units
from passthru.sim.kernel import (
    NORMAL,
    PENDING,
    URGENT,
    Cancelled,
    Condition,
    EmptySchedule,
    Environment,
    Event,
    Interrupt,
    Process,
    Request,
    Resource,
    SimulationError,
    Timeout,
)
from passthru.sim.streams import Streams

__all__ = [
    "NORMAL",
    "PENDING",
    "URGENT",
    "Cancelled",
    "Condition",
    "EmptySchedule",
    "Environment",
    "Event",
    "Interrupt",
    "Process",
    "Request",
    "Resource",
    "SimulationError",
    "Streams",
    "Timeout",
    "units",
]
