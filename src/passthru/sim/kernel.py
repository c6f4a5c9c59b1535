"""The simulation kernel: a discrete-event scheduler over integer-nanosecond virtual time.

What it models
    Virtual time and cooperative processes. A process is a generator that yields what it
    waits for: an int delay in ns or an event (:mod:`passthru.sim.events`). The
    :class:`Environment` processes scheduled entries in ``(time, priority, seq)`` order, so
    a run is a pure function of what was scheduled: equal times are broken by priority
    (``URGENT`` before ``NORMAL``), then by scheduling order ``seq``. Entries due now live in
    two FIFOs and later ones in a heap (see ``Environment.__init__``); the order is the one
    a single SimPy heap would give.

What it follows
    SimPy 4's core/events design (``simpy/core.py``, ``simpy/events.py``): events with
    callbacks, a process is an event carrying the generator's return value, a failed event
    nobody took crashes :meth:`Environment.run`, process start and interrupts are
    ``URGENT``, :class:`Interrupt` is thrown into the generator at its yield, and
    ``run(until=t)`` stops before anything due at ``t``, leaving ``now == t``.

Where it differs from SimPy
    - Time is an ``int`` number of ns. A float, bool or negative delay raises instead of
      being rounded (convert with :mod:`passthru.sim.units`). Numpy integers are accepted.
    - A process may ``yield <int>``: ordered exactly like ``yield env.timeout(d)``, but no
      event is allocated: the heap entry carries the process's wake-up token.
    - A process that succeeds while nobody waits on it is not queued (see ``Process``).
    - ``Resource.release`` grants the next request at once (see ``resources``).
    - :meth:`Process.cancel` (SimPy has none) stops a process without resuming it.
    - Failures are delivered and re-raised as the original exception object (SimPy copies).
    - Yielding neither an event nor a delay throws ``TypeError`` into the generator at that
      yield, so the traceback points at the offending line.

Left out
    Real-time mode, ``active_process``, ``Event.trigger``, priority/preemptive resources,
    stores and containers. Tracing belongs to the callers.
"""

from __future__ import annotations

import itertools
import operator
from collections import deque
from collections.abc import Generator, Iterable
from heapq import heapify, heappop, heappush
from types import GeneratorType
from typing import Any

from passthru.sim.events import (
    NORMAL,
    PENDING,
    URGENT,
    Cancelled,
    Condition,
    EmptySchedule,
    Event,
    Interrupt,
    Process,
    ProcessGenerator,
    SimulationError,
    Timeout,
    _new,
    as_delay,
)
from passthru.sim.resources import Request, Resource


class Environment:
    """The clock and the event queue. ``now`` is an int number of nanoseconds."""

    __slots__ = ("_now", "_queue", "_urgent", "_due", "_eid")

    def __init__(self, initial_time: int = 0) -> None:
        self._now = as_delay(initial_time, "initial_time")
        # Entries are processed in (time, priority, seq) order, as in SimPy, but kept in
        # three places so that the many entries scheduled for the current time need no
        # heap. An item is an Event, or a process's wake-up token [process] (resume it
        # with None).
        # - _urgent: URGENT entries (process starts, interrupts). Always due now and
        #   before every NORMAL entry due now, so a FIFO drained first keeps their order.
        self._urgent: deque[Any] = deque()
        # - _queue: a heap of (time, seq, item) for NORMAL entries scheduled with a delay
        #   > 0; seq is unique, so items never compare. Those due now were all scheduled
        #   before now, so they precede everything in _due. The only URGENT heap entry,
        #   run(until=t)'s marker, has a negative seq.
        self._queue: list[tuple[int, int, Any]] = []
        # - _due: NORMAL entries scheduled for the current time (succeed, grants, zero
        #   delays), in scheduling order. Empty whenever time advances.
        self._due: deque[Any] = deque()
        self._eid = itertools.count()

    # A C-level getter: env.now is read constantly by models.
    now = property(operator.attrgetter("_now"), doc="Current virtual time in ns (an int).")

    def __repr__(self) -> str:
        queued = len(self._queue) + len(self._urgent) + len(self._due)
        return f"<Environment now={self._now} ns, {queued} queued>"

    # -- factories -----------------------------------------------------------------------
    def event(self) -> Event:
        """A pending event, to be triggered with ``succeed``/``fail``."""
        return Event(self)

    def timeout(self, delay: int, value: Any = None) -> Timeout:
        """An event that succeeds with ``value`` after ``delay`` ns."""
        if delay.__class__ is not int or delay < 0:
            delay = as_delay(delay)
        # Timeout(self, delay, value) inlined.
        ev = _new(Timeout)
        ev.env = self
        ev.callbacks = []
        ev._value = value
        ev._ok = True
        ev._defused = False
        ev.delay = delay
        if delay:
            heappush(self._queue, (self._now + delay, next(self._eid), ev))
        else:
            self._due.append(ev)
        return ev

    def process(self, generator: ProcessGenerator) -> Process:
        """Start ``generator`` as a process (its first step runs now, URGENT)."""
        kind = type(generator)
        if kind not in _GENERATOR_TYPES:
            if not isinstance(generator, Generator):  # an ABC check: ~0.5 us, so once per type
                return Process(self, generator)  # raises the TypeError
            _GENERATOR_TYPES.add(kind)  # e.g. the generators of a mypyc-compiled module
        # Process(self, generator) inlined (see events._init_process): one per customer.
        proc = _new(Process)
        proc.env = self
        proc.callbacks = []
        proc._value = PENDING
        proc._ok = True
        proc._defused = False
        proc._gen = generator
        proc._target = None
        proc._wake = wake = [proc]
        self._urgent.append(wake)
        return proc

    def all_of(self, events: Iterable[Event]) -> Condition:
        """An event that succeeds when all ``events`` have succeeded."""
        return Condition(self, events, need_all=True)

    def any_of(self, events: Iterable[Event]) -> Condition:
        """An event that succeeds when any of ``events`` has succeeded."""
        return Condition(self, events, need_all=False)

    # -- running -------------------------------------------------------------------------
    def peek(self) -> int | None:
        """Time of the next queued entry, or None if nothing is queued."""
        if self._urgent or self._due:
            return self._now
        return self._queue[0][0] if self._queue else None

    def step(self) -> None:
        """Process the next queued entry; EmptySchedule if there is none.

        An entry left behind by a detached wait (interrupt, cancel) is a no-op that only
        advances the clock, like SimPy's orphaned Timeout.
        """
        queue = self._queue
        if self._urgent:
            item = self._urgent.popleft()
        elif self._due:
            if queue and queue[0][0] == self._now:
                item = heappop(queue)[2]  # scheduled earlier for now: goes first
            else:
                item = self._due.popleft()
        elif queue:
            self._now, _, item = heappop(queue)
        else:
            raise EmptySchedule(f"{self!r}: no scheduled events left")
        if type(item) is list:
            proc = item[0]
            if proc is not None:
                proc._resume(_WOKEN)  # a wake-up is a succeeded event with value None
            return
        callbacks = item.callbacks
        item.callbacks = None
        for callback in callbacks:
            callback(item)
        if not item._ok and not item._defused:
            raise item._value

    def run(self, until: int | Event | None = None) -> Any:
        """Process events until none are left, until time ``until``, or event ``until``.

        - ``until=None``: until nothing is left; returns None.
        - ``until=t`` (int, ``t > now``): processes everything due before ``t``, then sets
          ``now = t``; returns None.
        - ``until=event``: until that event is processed; returns its value (raises its
          exception if it failed, SimulationError if nothing is left before that).

        A failed event nobody took is raised here; the run can be resumed afterwards.
        """
        if until is None:
            stop: Event | None = None
        elif isinstance(until, Event):
            if until.env is not self:
                raise SimulationError(f"run(until={until!r}): event of another Environment")
            if until.callbacks is None:
                return _outcome(until)
            stop = until
            # Keeps the event off the inline path below and a finishing process queued.
            until.callbacks.append(_noop)
        else:
            at = as_delay(until, "until")
            if at <= self._now:
                raise ValueError(f"until={at} must be greater than now={self._now}")
            # A marker URGENT at `at` stops before anything else due at `at` (SimPy's way):
            # its negative seq sorts it before every NORMAL entry at `at`.
            stop = _new(Event)
            stop.env = self
            stop.callbacks = []
            stop._value = None
            stop._ok = True
            stop._defused = False
            heappush(self._queue, (at, -1 - next(self._eid), stop))

        # step() inlined with locals cached, plus Process._resume's common cases inlined:
        # this loop is the inner loop of every experiment.
        queue = self._queue
        urgent = self._urgent
        popleft = urgent.popleft
        due = self._due
        due_popleft = due.popleft
        pop = heappop
        push = heappush
        eid = self._eid
        process = Process
        now = self._now
        try:
            while True:
                if urgent:
                    item = popleft()
                elif due:
                    if queue and queue[0][0] == now:
                        item = pop(queue)[2]  # scheduled earlier for now: goes first
                    else:
                        item = due_popleft()
                elif queue:
                    now, _, item = pop(queue)
                    self._now = now
                else:
                    break
                if type(item) is list:  # a wake-up token: resume with None
                    proc = item[0]
                    if proc is None:
                        continue  # left by a wait detached by interrupt/cancel: a no-op
                    value = None
                else:
                    callbacks = item.callbacks
                    item.callbacks = None
                    if (
                        len(callbacks) != 1
                        or type(proc := callbacks[0]) is not process
                        or not item._ok
                    ):
                        for callback in callbacks:
                            callback(item)
                        if not item._ok and not item._defused:
                            raise item._value
                        if item is stop:
                            return _outcome(item)
                        continue
                    # The only callback is a process waiting on this successful event.
                    value = item._value
                    proc._target = None

                # Process._resume inlined for its common cases; _wait/_end do the rest.
                while True:
                    try:
                        yielded = proc._gen.send(value)
                    except StopIteration as done:
                        if proc.callbacks:
                            proc._end(True, done.value)
                        else:  # nobody waits: processed at once (see Process)
                            proc._value = done.value
                            proc.callbacks = None
                            proc._wake = None
                        break
                    except Exception as error:  # noqa: BLE001 - the process's failure
                        proc._end(False, error)
                        break
                    if type(yielded) is int:
                        if yielded > 0:
                            at = now + yielded
                            if urgent or due or (queue and queue[0][0] <= at):
                                push(queue, (at, next(eid), proc._wake))
                                break
                            # Nothing else is due before `at` (an entry already queued
                            # for `at` would go first): advance the clock and resume at
                            # once, as the heap would have, without the round trip.
                            now = self._now = at
                            value = None
                            continue
                        if yielded == 0:
                            due.append(proc._wake)
                            break
                    try:
                        waiters = yielded.callbacks
                        if waiters is not None and yielded.env is self:
                            waiters.append(proc)
                            proc._target = yielded
                            break
                    except AttributeError:
                        pass
                    proc._wait(yielded)  # the rare cases
                    break
        except BaseException:
            if stop is not None and stop is not until:
                # Aborted run(until=t): drop the marker so a later run does not stop at t.
                for index, entry in enumerate(queue):
                    if entry[2] is stop:
                        queue[index] = queue[-1]
                        queue.pop()
                        heapify(queue)
                        break
            raise
        if stop is not None:
            raise SimulationError(
                f"run(until={until!r}): no scheduled events left but the event was not "
                "processed"
            )
        return None


# Types already seen to be generators (collections.abc.Generator), for process().
_GENERATOR_TYPES: set[type] = {GeneratorType}


def _noop(event: Event) -> None:
    pass


def _outcome(event: Any) -> Any:
    """The value of a processed event, or its exception raised."""
    if event._ok:
        return event._value
    raise event._value


# step()'s stand-in for a wake-up: a processed, succeeded event with value None. It is
# never queued or mutated (Process._resume only writes _defused on failed events).
_WOKEN = _new(Event)
_WOKEN.env = None  # type: ignore[assignment]
_WOKEN.callbacks = None
_WOKEN._value = None
_WOKEN._ok = True
_WOKEN._defused = False


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
    "ProcessGenerator",
    "Request",
    "Resource",
    "SimulationError",
    "Timeout",
    "as_delay",
]
