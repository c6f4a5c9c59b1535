"""Interrupt (SimPy's semantics) and cancel (passthru's) of waiting processes."""

from __future__ import annotations

import pytest

from passthru.sim import Cancelled, Environment, Interrupt, Resource, SimulationError


def test_interrupt_during_a_delay_is_raised_at_the_yield_now() -> None:
    env = Environment()
    log = []

    def sleeper():
        try:
            yield 100
            log.append(("woke", env.now))
        except Interrupt as irq:
            log.append(("interrupted", env.now, irq.cause))
        yield 1
        log.append(("after", env.now))

    def waker(p):
        yield 30
        p.interrupt("doorbell")

    p = env.process(sleeper())
    env.process(waker(p))
    env.run()
    # the original 100 ns wake-up never resumes it (it stays queued as a no-op, like
    # SimPy's orphaned Timeout, so the clock still ends at 100)
    assert log == [("interrupted", 30, "doorbell"), ("after", 31)]
    assert env.now == 100


def test_interrupt_while_waiting_on_an_event_forgets_the_event() -> None:
    env = Environment()
    ev = env.event()
    log = []

    def waiter():
        try:
            yield ev
        except Interrupt:
            log.append(("interrupted", env.now))
        yield 50
        log.append(("done", env.now))

    def driver(p):
        yield 10
        p.interrupt()
        yield 5
        ev.succeed("late")  # the waiter no longer waits on it

    p = env.process(waiter())
    env.process(driver(p))
    env.run()
    assert log == [("interrupted", 10), ("done", 60)]
    assert ev.processed and ev.value == "late"


def test_interrupt_is_urgent() -> None:
    """Delivered before NORMAL events already due at the same time."""
    env = Environment()
    order = []

    def victim():
        try:
            yield env.event()
        except Interrupt:
            order.append("interrupt delivered")

    def driver(p):
        yield 5
        ev = env.event()
        ev.add_callback(lambda _: order.append("normal event"))
        ev.succeed()
        p.interrupt()

    p = env.process(victim())
    env.process(driver(p))
    env.run()
    assert order == ["interrupt delivered", "normal event"]


def test_uncaught_interrupt_fails_the_process() -> None:
    env = Environment()

    def victim():
        yield 10

    def parent():
        child = env.process(victim())
        yield 1
        child.interrupt("stop")
        try:
            yield child
        except Interrupt as irq:
            return irq.cause

    p = env.process(parent())
    env.run()
    assert p.value == "stop"


def test_interrupts_queue_and_are_dropped_once_the_process_ended() -> None:
    env = Environment()
    causes = []

    def victim():
        for _ in range(2):
            try:
                yield 100
            except Interrupt as irq:
                causes.append(irq.cause)
        # returns after the second interrupt; the third finds it dead

    def driver(p):
        yield 1
        p.interrupt(1)
        p.interrupt(2)
        p.interrupt(3)

    p = env.process(victim())
    env.process(driver(p))
    env.run()
    assert causes == [1, 2]
    assert not p.is_alive and p.ok


def test_interrupt_misuse() -> None:
    env = Environment()

    def done():
        yield 1

    def selfish():
        me.interrupt()
        yield 1

    p = env.process(done())
    env.run()
    with pytest.raises(SimulationError, match="terminated"):
        p.interrupt()

    me = env.process(selfish())
    with pytest.raises(SimulationError, match="itself"):
        env.run()


def test_interrupt_before_start_is_delivered_at_the_first_yield() -> None:
    env = Environment()
    log = []

    def victim():
        log.append("started")
        try:
            yield 10
        except Interrupt:
            log.append(("interrupted", env.now))

    p = env.process(victim())
    p.interrupt()
    env.run()
    assert log == ["started", ("interrupted", 0)]


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_stops_without_resuming_and_runs_finally_now() -> None:
    env = Environment()
    log = []

    def worker():
        try:
            yield 100
            log.append("resumed")  # never
        finally:
            log.append(("finally", env.now))

    def boss(w):
        yield 20
        assert w.cancel("enough") is True
        log.append(("cancelled", env.now, w.is_alive))

    w = env.process(worker())
    env.process(boss(w))
    env.run()
    assert log == [("finally", 20), ("cancelled", 20, False)]  # never "resumed" at 100
    assert not w.ok and isinstance(w.value, Cancelled) and w.value.cause == "enough"


def test_cancelled_process_is_reported_to_waiters_only() -> None:
    env = Environment()

    def worker():
        yield 100

    def watcher(w):
        try:
            yield w
        except Cancelled as why:
            return ("cancelled", env.now, why.cause)

    def boss(w):
        yield 7
        w.cancel("budget")

    w = env.process(worker())
    watch = env.process(watcher(w))
    env.process(boss(w))
    env.run()  # does not crash: the cancellation is defused
    assert watch.value == ("cancelled", 7, "budget")


def test_cancel_with_nobody_waiting_does_not_crash_the_run() -> None:
    env = Environment()

    def worker():
        yield env.event()

    w = env.process(worker())
    env.run()
    w.cancel()
    env.run()
    assert w.state == "processed" and w.defused


def test_cancel_is_idempotent_and_refuses_self() -> None:
    env = Environment()

    def selfish():
        yield 1
        me.cancel()

    def quick():
        yield 1

    q = env.process(quick())
    env.run()
    assert q.cancel() is False

    me = env.process(selfish())
    with pytest.raises(SimulationError, match="cannot cancel itself"):
        env.run()


def test_cancel_before_start_never_runs_the_generator() -> None:
    env = Environment()
    log = []

    def worker():
        log.append("ran")
        yield 1

    w = env.process(worker())
    assert w.cancel() is True
    env.run()
    assert log == []


def test_cancel_drops_pending_interrupts() -> None:
    env = Environment()
    log = []

    def worker():
        try:
            yield 100
        except Interrupt:  # pragma: no cover - must not happen
            log.append("interrupted")

    w = env.process(worker())
    env.run(until=1)
    w.interrupt()
    w.cancel()
    env.run()
    assert log == []


def test_cancel_of_a_queued_requester_withdraws_its_request() -> None:
    env = Environment()
    server = Resource(env)
    got = []

    def user(name, hold):
        with server.request() as req:
            yield req
            got.append((name, env.now))
            yield hold

    env.process(user("a", 10))
    b = env.process(user("b", 10))
    env.process(user("c", 10))
    env.run(until=5)
    assert len(server.queue) == 2
    b.cancel()
    assert len(server.queue) == 1
    env.run()
    assert got == [("a", 0), ("c", 10)]


def test_generator_that_yields_while_closing_fails_the_process() -> None:
    env = Environment()

    def stubborn():
        try:
            yield 10
        finally:
            yield 1  # not allowed while closing

    p = env.process(stubborn())
    env.run(until=2)
    assert p.cancel() is True
    with pytest.raises(RuntimeError, match="ignored GeneratorExit"):
        env.run()
