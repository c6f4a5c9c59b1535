"""Events and processes of the simulation kernel (see :mod:`passthru.sim.kernel`).

What it models
    An :class:`Event` is something that happens at one instant; callbacks run when it is
    processed. A :class:`Process` runs a generator that yields what it waits for (an int
    delay in ns, or an event) and is itself an event carrying the generator's return value.
    :class:`Timeout` and :class:`Condition` (``all_of``/``any_of``) are events too.

What it follows
    SimPy 4's ``simpy/events.py``: the same states, callbacks, failure and interrupt rules.
    Differences are listed in :mod:`passthru.sim.kernel`.

Event states

    =========  ==================  =============  ==========================================
    state      ``_value``          ``callbacks``  meaning
    =========  ==================  =============  ==========================================
    pending    ``PENDING``         list           not triggered; ``succeed``/``fail`` allowed
    triggered  value or exception  list           in the heap; callbacks not run yet
    processed  value or exception  ``None``       callbacks have run (exactly once)
    =========  ==================  =============  ==========================================

    Triggering an event twice raises :class:`SimulationError`. Yielding a processed event
    resumes the process at once with its outcome (as in SimPy). A failed event whose
    exception nobody took is re-raised by ``Environment.run`` when it is processed.

Left out
    ``Event.trigger``, the ``&``/``|`` operators, ``ConditionValue`` (a plain dict is used).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Generator, Iterable
from heapq import heappush
from types import GeneratorType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from passthru.sim.kernel import Environment

#: Priority of process start-up and interrupt delivery: before anything else at that time.
URGENT = 0
#: Priority of everything else.
NORMAL = 1

_new = object.__new__  # builds slotted objects without a Python-level __init__ frame


class _Pending:
    __slots__ = ()

    def __repr__(self) -> str:
        return "PENDING"


#: The value of an event that has not been triggered.
PENDING: Any = _Pending()

ProcessGenerator = Generator[Any, Any, Any]


class SimulationError(RuntimeError):
    """Misuse of the kernel: triggering an event twice, interrupting a dead process, ..."""


class EmptySchedule(SimulationError):
    """:meth:`Environment.step` was called with nothing left to do."""


class Interrupt(Exception):
    """Thrown into a process at its current yield by :meth:`Process.interrupt`."""

    def __init__(self, cause: Any = None) -> None:
        super().__init__(cause)

    @property
    def cause(self) -> Any:
        return self.args[0]


class Cancelled(Exception):
    """The failure of a process stopped by :meth:`Process.cancel` (delivered to waiters)."""

    def __init__(self, cause: Any = None) -> None:
        super().__init__(cause)

    @property
    def cause(self) -> Any:
        return self.args[0]


def as_delay(delay: object, what: str = "delay") -> int:
    """Return ``delay`` as a non-negative int (numpy ints accepted); refuse anything else.

    Floats are refused rather than rounded: simulated time never rounds silently.
    """
    if type(delay) is not int:
        if isinstance(delay, bool) or not hasattr(type(delay), "__index__"):
            raise TypeError(
                f"{what} must be an int number of nanoseconds, got {type(delay).__name__} "
                f"{delay!r}; convert explicitly, e.g. passthru.sim.units.us(2.5)"
            )
        delay = operator.index(delay)  # type: ignore[call-overload, arg-type]
    if delay < 0:  # type: ignore[operator]
        raise ValueError(f"{what} must be >= 0 ns, got {delay}")
    return delay  # type: ignore[return-value]


class Event:
    """Something that happens at one instant; processes wait for it by yielding it.

    ``callbacks``: the ``fn(event)`` run in order when the event is processed, then None.
    A failure is *taken* by a process waiting on the event, or by setting ``defused``.
    """

    __slots__ = ("env", "callbacks", "_value", "_ok", "_defused")

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.callbacks: list[Callable[[Event], None]] | None = []
        self._value: Any = PENDING
        self._ok = True
        self._defused = False

    @property
    def triggered(self) -> bool:
        """True once ``succeed``/``fail`` was called (or the timeout/process ended)."""
        return self._value is not PENDING

    @property
    def processed(self) -> bool:
        """True once the event's callbacks have run."""
        return self.callbacks is None

    @property
    def state(self) -> str:
        """``"pending"``, ``"triggered"`` or ``"processed"``."""
        if self.callbacks is None:
            return "processed"
        return "pending" if self._value is PENDING else "triggered"

    @property
    def ok(self) -> bool:
        """True if the event succeeded; raises while it is pending."""
        if self._value is PENDING:
            raise SimulationError(f"{self!r} is pending: it has no outcome yet")
        return self._ok

    @property
    def value(self) -> Any:
        """The success value, or the exception of a failed event; raises while pending."""
        if self._value is PENDING:
            raise SimulationError(f"{self!r} is pending: it has no value yet")
        return self._value

    @property
    def defused(self) -> bool:
        """True if this event's failure has been taken and must not crash the run."""
        return self._defused

    @defused.setter
    def defused(self, value: bool) -> None:
        self._defused = bool(value)

    def succeed(self, value: Any = None) -> Event:
        """Trigger with ``value``; processed at the current time after what is already due."""
        if self._value is not PENDING:
            raise SimulationError(f"{self!r} has already been triggered")
        self._ok = True
        self._value = value
        self.env._due.append(self)
        return self

    def fail(self, exception: BaseException) -> Event:
        """Trigger as failed; processes waiting on the event get ``exception`` thrown in."""
        if not isinstance(exception, BaseException):
            raise TypeError(f"fail() needs an exception instance, got {exception!r}")
        if self._value is not PENDING:
            raise SimulationError(f"{self!r} has already been triggered")
        self._ok = False
        self._value = exception
        self.env._due.append(self)
        return self

    def add_callback(self, callback: Callable[[Event], None]) -> None:
        """Run ``callback(event)`` when the event is processed."""
        if self.callbacks is None:
            raise SimulationError(f"{self!r} has already been processed; its callbacks ran")
        self.callbacks.append(callback)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.state}>"


def _carrier(env: Environment, exc: BaseException) -> Event:
    """A processed, failed, defused event: hands ``exc`` to ``Process._resume``."""
    ev = Event(env)
    ev.callbacks = None
    ev._ok = False
    ev._value = exc
    ev._defused = True
    return ev


class Timeout(Event):
    """An event that succeeds with ``value`` ``delay`` ns after its creation."""

    __slots__ = ("delay",)

    def __init__(self, env: Environment, delay: int, value: Any = None) -> None:
        if delay.__class__ is not int or delay < 0:
            delay = as_delay(delay)
        self.env = env
        self.callbacks = []
        self._value = value
        self._ok = True
        self._defused = False
        self.delay = delay
        if delay:
            heappush(env._queue, (env._now + delay, next(env._eid), self))
        else:
            env._due.append(self)

    def __repr__(self) -> str:
        return f"<Timeout({self.delay}) {self.state}>"


class Process(Event):
    """Runs a generator; is itself an event that succeeds with the generator's return value.

    The generator yields an int delay (ns) or an event, and is resumed with the event's
    value, or has its exception thrown in. If the generator raises, the process fails with
    that exception (crashing the run unless a process waits on it).

    A process that *succeeds* while nobody waits on it is processed at once instead of
    being queued (it saves a heap round trip per finished process); yielding it afterwards
    continues at once, as with any processed event. A failure is always queued, so a
    process yielding it later in the same instant can still take it.
    """

    __slots__ = ("_gen", "_target", "_wake")
    _gen: Any  # a generator: CPython's GeneratorType, or a compiled module's
    _target: Event | None
    _wake: list[Any] | None  # [self], or [None] once detached

    def __init__(self, env: Environment, generator: ProcessGenerator) -> None:
        _init_process(self, env, generator)

    @property
    def name(self) -> str:
        return self._gen.__qualname__

    @property
    def is_alive(self) -> bool:
        """True until the generator has returned, raised or been cancelled."""
        return self._value is PENDING

    @property
    def target(self) -> Event | None:
        """The event the process waits for; None if it waits on a delay or has ended."""
        return self._target

    def __repr__(self) -> str:
        return f"<Process({self.name}) {self.state}>"

    def _resume(self, event: Event) -> None:
        """Callback: advance the generator with ``event``'s outcome until it waits or ends.

        (The loop in ``Environment.run`` inlines the same steps for resuming after a delay.)
        """
        env = self.env
        gen = self._gen
        while True:
            try:
                if event._ok:
                    yielded = gen.send(event._value)
                else:
                    event._defused = True  # the process takes the failure (or fails itself)
                    yielded = gen.throw(event._value)
            except StopIteration as stop:
                self._end(True, stop.value)
                return
            except Exception as error:  # noqa: BLE001 - becomes the process's failure
                self._end(False, error)
                return

            if type(yielded) is int and yielded >= 0:
                if yielded:
                    heappush(env._queue, (env._now + yielded, next(env._eid), self._wake))
                else:
                    env._due.append(self._wake)
                self._target = None
                return
            try:
                callbacks = yielded.callbacks
                if callbacks is not None and yielded.env is env:
                    callbacks.append(self)
                    self._target = yielded
                    return
            except AttributeError:
                pass
            event = self._odd_yield(yielded)  # type: ignore[assignment]
            if event is None:
                return

    # A waiting process sits in its target's callbacks itself (no bound method per process);
    # Environment.run resumes a sole process waiter inline instead of calling it.
    __call__ = _resume

    def _wait(self, yielded: Any) -> None:
        """Wait on what the generator yielded, when it is not a plain delay."""
        try:
            callbacks = yielded.callbacks
            if callbacks is not None and yielded.env is self.env:
                callbacks.append(self)
                self._target = yielded
                return
        except AttributeError:
            pass
        outcome = self._odd_yield(yielded)
        if outcome is not None:
            self._resume(outcome)

    def _odd_yield(self, yielded: Any) -> Event | None:
        """The rare yields: a processed event, a numpy int, or a mistake.

        Returns None once the process waits, else the (processed) event whose outcome
        resumes the generator at once; mistakes become a TypeError/ValueError thrown in.
        """
        env = self.env
        if isinstance(yielded, Event):
            if yielded.env is not env:
                return _carrier(env, SimulationError(
                    f"{self!r} yielded {yielded!r}, which belongs to another Environment"
                ))
            return yielded  # already processed: continue with its outcome, as SimPy does
        if isinstance(yielded, float):
            return _carrier(env, TypeError(
                f"a process must yield an int delay in ns, got float {yielded!r}; "
                "simulated time does not round: convert with passthru.sim.units"
            ))
        try:
            delay = as_delay(yielded, "yielded delay")
        except ValueError as error:
            return _carrier(env, error)
        except TypeError:
            return _carrier(env, TypeError(
                f"a process must yield an Event or an int delay in ns, got "
                f"{type(yielded).__name__} {yielded!r}"
            ))
        if delay:
            heappush(env._queue, (env._now + delay, next(env._eid), self._wake))
        else:
            env._due.append(self._wake)
        self._target = None
        return None

    def _end(self, ok: bool, value: Any) -> None:
        self._ok = ok
        self._value = value
        self._target = None
        # Break the process <-> token cycle: a finished process is then freed by reference
        # counting instead of waiting for the cyclic GC.
        self._wake = None
        if ok and not self.callbacks:
            self.callbacks = None  # nobody waits: processed now (see the class docstring)
            return
        self.env._due.append(self)

    def _detach(self) -> None:
        """Stop waiting on the current target without resuming."""
        target = self._target
        if target is None:
            self._wake[0] = None  # type: ignore[index]  # the queued token becomes a no-op
            self._wake = [self]
        else:
            target.callbacks.remove(self)  # type: ignore[union-attr]
            self._target = None

    def interrupt(self, cause: Any = None) -> None:
        """Throw :class:`Interrupt` (``cause``) into the process at its current yield.

        Delivered ``URGENT`` at the current time. What the process waited for is forgotten:
        the event still happens, the process just no longer waits on it. Interrupts queue
        up; one reaching a process that has ended meanwhile is dropped (as in SimPy).
        """
        if self._value is not PENDING:
            raise SimulationError(f"{self!r} has terminated and cannot be interrupted")
        if self._gen.gi_running:
            raise SimulationError(f"{self!r} cannot interrupt itself")
        env = self.env
        ev = Event(env)
        ev._ok = False
        ev._value = Interrupt(cause)
        ev._defused = True
        ev.callbacks = [self._deliver_interrupt]  # type: ignore[list-item]
        env._urgent.append(ev)

    def _deliver_interrupt(self, event: Event) -> None:
        if self._value is not PENDING:
            return  # ended, or was cancelled, after the interrupt was scheduled
        self._detach()
        self._resume(event)

    def cancel(self, cause: Any = None) -> bool:
        """Stop the process now, without resuming it; False if it had already ended.

        Synchronous: the process stops waiting on its target and its generator is closed
        (``GeneratorExit`` at the yield, so ``finally`` blocks and ``with
        resource.request()`` exits run now). The process then fails with
        :class:`Cancelled` (``cause``), defused: processes waiting on it get ``Cancelled``
        thrown in at the current time, and the run does not crash. Pending interrupts are
        dropped. If the generator raises while closing, the process fails with that
        exception instead (not defused). A process cannot cancel itself (it returns).
        """
        if self._value is not PENDING:
            return False
        if self._gen.gi_running:
            raise SimulationError(f"{self!r} cannot cancel itself; return from it instead")
        self._detach()
        try:
            self._gen.close()
        except Exception as error:  # noqa: BLE001 - becomes the process's failure
            self._end(False, error)
            return True
        self._defused = True
        self._end(False, Cancelled(cause))
        return True


def _init_process(proc: Process, env: Environment, generator: ProcessGenerator) -> None:
    # Environment.process inlines this; keep the two in step.
    if type(generator) is not GeneratorType and not isinstance(generator, Generator):
        raise TypeError(
            f"env.process() needs a generator object, got {generator!r} "
            "(did you pass the function instead of calling it?)"
        )
    proc.env = env
    proc.callbacks = []
    proc._value = PENDING
    proc._ok = True
    proc._defused = False
    proc._gen = generator
    # None while waiting on a delay (or not started); otherwise the awaited event.
    proc._target = None
    # Wake-up token: queue entries meaning "resume with None" (start, elapsed delay) carry
    # the one-element list [process] instead of an event. A list is the cheapest mutable
    # object to allocate; detaching sets token[0] = None and the loop skips the entry.
    proc._wake = wake = [proc]
    # Start at the current time, before NORMAL events (SimPy's Initialize is URGENT).
    env._urgent.append(wake)


class Condition(Event):
    """Succeeds once ``need`` of ``events`` succeeded; fails as soon as one of them fails.

    The value is a dict ``{event: value}`` of the events processed successfully when the
    condition triggers, in the order given. With no events it succeeds at once with ``{}``.
    """

    __slots__ = ("_events", "_need", "_count")

    def __init__(self, env: Environment, events: Iterable[Event], need_all: bool) -> None:
        super().__init__(env)
        self._events = evs = tuple(events)
        for ev in evs:
            if not isinstance(ev, Event):
                raise TypeError(f"conditions take events, got {ev!r}")
            if ev.env is not env:
                raise SimulationError(f"{ev!r} belongs to another Environment")
        self._need = len(evs) if need_all else min(1, len(evs))
        self._count = 0
        if self._need == 0:
            self.succeed({})
            return
        for ev in evs:
            if ev.callbacks is None:
                self._check(ev)
            else:
                ev.callbacks.append(self._check)

    def _check(self, event: Event) -> None:
        if self._value is not PENDING:
            return
        if not event._ok:
            event._defused = True
            self.fail(event._value)
        else:
            self._count += 1
            if self._count < self._need:
                return
            self.succeed({e: e._value for e in self._events if e.callbacks is None and e._ok})
        # Triggered: stop listening (breaks reference cycles with long-lived events).
        for ev in self._events:
            cbs = ev.callbacks
            if cbs is not None and self._check in cbs:
                cbs.remove(self._check)


__all__ = [
    "NORMAL",
    "PENDING",
    "URGENT",
    "Cancelled",
    "Condition",
    "EmptySchedule",
    "Event",
    "Interrupt",
    "Process",
    "ProcessGenerator",
    "SimulationError",
    "Timeout",
    "as_delay",
]
