"""Kernel basics: int time, ordering, run/step/peek, processes, events and their misuse."""

from __future__ import annotations

import numpy as np
import pytest

from passthru.sim import (
    EmptySchedule,
    Environment,
    Event,
    Process,
    SimulationError,
    Timeout,
)

# -- int-only time -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [1.5, 2.0, np.float64(3.0), True, "5", None])
def test_timeout_refuses_non_int_delays(bad: object) -> None:
    env = Environment()
    with pytest.raises(TypeError, match="int number of nanoseconds"):
        env.timeout(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int number of nanoseconds"):
        Timeout(env, bad)  # type: ignore[arg-type]


def test_negative_delay_is_refused() -> None:
    env = Environment()
    with pytest.raises(ValueError, match=">= 0"):
        env.timeout(-1)


def test_numpy_integers_are_accepted_as_delays() -> None:
    env = Environment()
    seen = []

    def proc():
        yield np.int64(7)
        seen.append(env.now)
        yield env.timeout(np.uint16(3))
        seen.append(env.now)

    env.process(proc())
    env.run()
    assert seen == [7, 10]
    assert type(env.now) is int


def test_now_is_an_int_and_read_only() -> None:
    env = Environment(initial_time=5)
    assert env.now == 5 and type(env.now) is int
    with pytest.raises(AttributeError):
        env.now = 6  # type: ignore[misc]
    with pytest.raises(TypeError):
        Environment(initial_time=0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "exc", "match"),
    [
        (1.5, TypeError, "does not round"),
        (-3, ValueError, ">= 0"),
        ("soon", TypeError, "must yield an Event or an int delay"),
        (None, TypeError, "must yield an Event or an int delay"),
        (True, TypeError, "must yield an Event or an int delay"),
    ],
)
def test_bad_yield_is_thrown_into_the_generator_at_the_yield(
    bad: object, exc: type[Exception], match: str
) -> None:
    env = Environment()
    caught: list[Exception] = []

    def proc():
        try:
            yield bad
        except exc as error:
            caught.append(error)
        yield 4  # the process goes on normally afterwards
        return env.now

    p = env.process(proc())
    assert env.run(until=p) == 4
    assert len(caught) == 1
    assert match in str(caught[0])


def test_uncaught_bad_yield_fails_the_process_and_crashes_the_run() -> None:
    env = Environment()

    def proc():
        yield 2.5

    env.process(proc())
    with pytest.raises(TypeError, match="does not round"):
        env.run()


def test_yielding_an_event_of_another_environment_is_an_error() -> None:
    env, other = Environment(), Environment()

    def proc():
        yield other.timeout(1)

    env.process(proc())
    with pytest.raises(SimulationError, match="another Environment"):
        env.run()


# -- ordering ------------------------------------------------------------------------------


def test_equal_times_run_in_scheduling_order() -> None:
    env = Environment()
    order = []
    for name, delay in [("a", 5), ("b", 3), ("c", 5), ("d", 3), ("e", 0)]:
        env.timeout(delay, name).add_callback(lambda ev: order.append((env.now, ev.value)))
    env.run()
    assert order == [(0, "e"), (3, "b"), (3, "d"), (5, "a"), (5, "c")]


def test_process_start_is_urgent() -> None:
    """A process created now runs its first step before NORMAL events already due now."""
    env = Environment()
    order = []
    ev = env.event()
    ev.add_callback(lambda _: order.append("event"))
    ev.succeed()

    def proc():
        order.append("process start")
        yield 0
        order.append("process after yield 0")

    env.process(proc())
    env.run()
    assert order == ["process start", "event", "process after yield 0"]


def test_yield_int_orders_like_yield_timeout() -> None:
    env = Environment()
    order = []

    def by_int(name):
        for _ in range(3):
            yield 2
            order.append((env.now, name))

    def by_timeout(name):
        for _ in range(3):
            yield env.timeout(2)
            order.append((env.now, name))

    env.process(by_int("int1"))
    env.process(by_timeout("to"))
    env.process(by_int("int2"))
    env.run()
    expected = [(t, n) for t in (2, 4, 6) for n in ("int1", "to", "int2")]
    assert order == expected


def test_events_scheduled_earlier_for_now_precede_those_triggered_now() -> None:
    """At t=5, A runs first (scheduled first) and triggers E; the timeout T, scheduled at
    t=0 for t=5, still comes before E, which was only triggered at t=5 (SimPy's order)."""
    env = Environment()
    order = []

    def a():
        yield 5
        ev = env.event()
        ev.add_callback(lambda _: order.append("E"))
        ev.succeed()
        order.append("A")

    def b():
        env.timeout(5).add_callback(lambda _: order.append("T"))
        yield 0

    env.process(a())
    env.process(b())
    env.run()
    assert order == ["A", "T", "E"]


# -- run / step / peek ---------------------------------------------------------------------


def test_run_until_time_stops_before_events_at_that_time() -> None:
    env = Environment()
    fired = []
    for t in (3, 10, 11):
        env.timeout(t).add_callback(lambda ev: fired.append(env.now))
    env.run(until=10)
    assert env.now == 10
    assert fired == [3]
    env.run()
    assert fired == [3, 10, 11]


def test_lone_process_delays_stop_at_until_and_yield_to_earlier_ties() -> None:
    # A process alone in the schedule resumes without a heap round trip; that must still
    # stop at `until` and let an entry queued earlier for the same instant go first.
    env = Environment()
    log: list[tuple[int, str]] = []

    def ticker():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield 3
            log.append((env.now, "tick"))

    env.process(ticker())
    env.timeout(6).add_callback(lambda ev: log.append((env.now, "timer")))
    env.run(until=10)
    assert env.now == 10
    assert log == [(3, "tick"), (6, "timer"), (6, "tick"), (9, "tick")]
    env.run(until=30)
    assert log[-1] == (27, "tick") and len(log) == 10  # the tick due at 30 waits
    env.run()
    assert log[-1] == (30, "tick") and len(log) == 11 and env.now == 30


def test_run_until_time_sets_now_even_without_events() -> None:
    env = Environment()
    env.run(until=1_000)
    assert env.now == 1_000


@pytest.mark.parametrize("until", [0, -5])
def test_run_until_must_be_in_the_future(until: int) -> None:
    env = Environment()
    with pytest.raises(ValueError, match="until"):
        env.run(until=until)


def test_run_until_float_is_refused() -> None:
    with pytest.raises(TypeError):
        Environment().run(until=2.5)  # type: ignore[arg-type]


def test_run_until_event_returns_its_value() -> None:
    env = Environment()
    env.timeout(50)
    assert env.run(until=env.timeout(20, "done")) == "done"
    assert env.now == 20
    assert env.peek() == 50


def test_run_until_failed_event_raises() -> None:
    env = Environment()
    ev = env.event()
    ev.fail(KeyError("k"))
    with pytest.raises(KeyError):
        env.run(until=ev)


def test_run_until_event_that_never_happens() -> None:
    env = Environment()
    env.timeout(5)
    with pytest.raises(SimulationError, match="no scheduled events left"):
        env.run(until=env.event())


def test_run_until_processed_event_returns_at_once() -> None:
    env = Environment()
    ev = env.timeout(1, "x")
    env.run()
    assert env.run(until=ev) == "x"


def test_aborted_run_until_time_leaves_no_stop_marker() -> None:
    env = Environment()

    def boom():
        yield 5
        raise RuntimeError("boom")

    env.process(boom())
    late = env.timeout(200)
    with pytest.raises(RuntimeError, match="boom"):
        env.run(until=100)
    assert env.now == 5
    env.run()  # must not stop at the old until=100
    assert env.now == 200
    assert late.processed


def test_step_and_peek() -> None:
    env = Environment()
    assert env.peek() is None
    with pytest.raises(EmptySchedule):
        env.step()
    a = env.timeout(4, "a")
    b = env.timeout(2, "b")
    assert env.peek() == 2
    env.step()
    assert env.now == 2 and b.processed and not a.processed
    env.step()
    assert env.now == 4 and a.processed
    with pytest.raises(EmptySchedule):
        env.step()


def test_step_runs_processes() -> None:
    env = Environment()
    seen = []

    def proc():
        seen.append(env.now)
        yield 3
        seen.append(env.now)

    env.process(proc())
    env.step()
    assert seen == [0]
    env.step()
    assert seen == [0, 3]


# -- processes -----------------------------------------------------------------------------


def test_process_return_value_and_waiting_on_a_process() -> None:
    env = Environment()

    def child(x):
        yield x
        return x * 10

    def parent():
        got = yield env.process(child(4))
        return (env.now, got)

    p = env.process(parent())
    env.run()
    assert p.value == (4, 40)
    assert p.ok and p.processed and not p.is_alive


def test_waiting_on_a_finished_process_continues_at_once() -> None:
    env = Environment()

    def child():
        return "early"
        yield  # pragma: no cover

    def parent(c):
        yield 10
        got = yield c
        return (env.now, got)

    c = env.process(child())
    p = env.process(parent(c))
    env.run()
    assert p.value == (10, "early")


def test_process_failure_is_thrown_into_waiters() -> None:
    env = Environment()

    def child():
        yield 1
        raise ValueError("bad child")

    def parent():
        try:
            yield env.process(child())
        except ValueError as error:
            return f"caught {error}"

    p = env.process(parent())
    env.run()
    assert p.value == "caught bad child"


def test_unhandled_process_failure_crashes_run_with_the_original_exception() -> None:
    env = Environment()
    error = LookupError("lost")

    def proc():
        yield 1
        raise error

    p = env.process(proc())
    with pytest.raises(LookupError) as info:
        env.run()
    assert info.value is error
    assert not p.ok and p.value is error


def test_process_needs_a_generator() -> None:
    env = Environment()

    def proc():
        yield 1

    with pytest.raises(TypeError, match="did you pass the function"):
        env.process(proc)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Process(env, [1, 2])  # type: ignore[arg-type]


def test_process_target_and_name() -> None:
    env = Environment()
    ev = env.event()

    def waiter():
        yield ev

    p = env.process(waiter())
    assert "waiter" in p.name and "waiter" in repr(p)
    env.run()
    assert p.target is ev and p.is_alive
    ev.succeed()
    env.run()
    assert p.target is None and not p.is_alive


# -- events --------------------------------------------------------------------------------


def test_event_states_and_callbacks() -> None:
    env = Environment()
    ev = env.event()
    seen = []
    ev.add_callback(lambda e: seen.append(("first", e.value)))
    ev.add_callback(lambda e: seen.append(("second", e.value)))
    assert (ev.state, ev.triggered, ev.processed) == ("pending", False, False)
    with pytest.raises(SimulationError, match="pending"):
        _ = ev.value
    with pytest.raises(SimulationError, match="pending"):
        _ = ev.ok
    assert ev.succeed(42) is ev
    assert (ev.state, ev.triggered, ev.processed) == ("triggered", True, False)
    assert seen == []  # callbacks run when processed, not when triggered
    env.run()
    assert ev.state == "processed" and ev.callbacks is None
    assert seen == [("first", 42), ("second", 42)]
    with pytest.raises(SimulationError, match="already been processed"):
        ev.add_callback(print)


def test_triggering_twice_is_an_error() -> None:
    env = Environment()
    ev = env.event().succeed(1)
    with pytest.raises(SimulationError, match="already been triggered"):
        ev.succeed(2)
    with pytest.raises(SimulationError, match="already been triggered"):
        ev.fail(ValueError())
    with pytest.raises(SimulationError, match="already been triggered"):
        env.timeout(3).succeed()
    env.run()
    assert ev.value == 1


def test_fail_needs_an_exception() -> None:
    with pytest.raises(TypeError, match="exception instance"):
        Environment().event().fail("nope")  # type: ignore[arg-type]


def test_waiting_on_an_event_gets_its_value_or_exception() -> None:
    env = Environment()
    good, bad = env.event(), env.event()
    log = []

    def waiter():
        value = yield good
        log.append(("good", env.now, value))
        try:
            yield bad
        except KeyError as error:
            log.append(("bad", env.now, error.args[0]))

    def trigger():
        yield 3
        good.succeed("v")
        yield 4
        bad.fail(KeyError("k"))

    env.process(waiter())
    env.process(trigger())
    env.run()
    assert log == [("good", 3, "v"), ("bad", 7, "k")]
    assert bad.defused  # a waiting process took the failure


def test_unhandled_failed_event_crashes_the_run_unless_defused() -> None:
    env = Environment()
    env.event().fail(OSError("disk"))
    with pytest.raises(OSError, match="disk"):
        env.run()

    env = Environment()
    ev = env.event()
    ev.defused = True
    ev.fail(OSError("disk"))
    env.run()  # no crash
    assert not ev.ok


def test_many_waiters_resume_in_registration_order() -> None:
    env = Environment()
    ev = env.event()
    order = []

    def waiter(name):
        value = yield ev
        order.append((name, value))

    for name in "abc":
        env.process(waiter(name))
    env.run()
    ev.succeed("go")
    env.run()
    assert order == [("a", "go"), ("b", "go"), ("c", "go")]


def test_yielding_a_processed_event_continues_at_once() -> None:
    env = Environment()
    done = env.timeout(1, "old")

    def proc():
        yield 5
        value = yield done
        return (env.now, value)

    p = env.process(proc())
    env.run()
    assert p.value == (5, "old")


# -- conditions ----------------------------------------------------------------------------


def test_all_of_and_any_of() -> None:
    env = Environment()
    log = []

    def proc():
        a, b = env.timeout(3, "a"), env.timeout(5, "b")
        first = yield env.any_of([a, b])
        log.append((env.now, list(first.values())))
        both = yield env.all_of([a, b])
        log.append((env.now, [both[a], both[b]]))
        empty = yield env.all_of([])
        log.append((env.now, empty))

    env.process(proc())
    env.run()
    assert log == [(3, ["a"]), (5, ["a", "b"]), (5, {})]


def test_condition_fails_with_its_first_failing_event() -> None:
    env = Environment()
    bad = env.event()

    def proc():
        try:
            yield env.all_of([env.timeout(10), bad])
        except ZeroDivisionError:
            return env.now

    def breaker():
        yield 2
        bad.fail(ZeroDivisionError())

    p = env.process(proc())
    env.process(breaker())
    env.run()
    assert p.value == 2


def test_condition_rejects_non_events() -> None:
    env = Environment()
    with pytest.raises(TypeError):
        env.all_of([env.timeout(1), 5])  # type: ignore[list-item]
    with pytest.raises(SimulationError):
        env.any_of([Environment().timeout(1)])


def test_event_repr_names_state() -> None:
    env = Environment()
    assert "pending" in repr(Event(env))
    assert "Timeout(3)" in repr(env.timeout(3))
    assert "now=0" in repr(env)
