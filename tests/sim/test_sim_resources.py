"""Resource: capacity, FIFO grants, release and withdrawal."""

from __future__ import annotations

import pytest

from passthru.sim import Environment, Resource


def _users(env: Environment, server: Resource, jobs: list[tuple[str, int, int]]) -> list:
    """Start (name, arrival, hold) jobs; return the (name, granted_at, released_at) log."""
    log = []

    def job(name, arrival, hold):
        yield arrival
        with server.request() as req:
            yield req
            granted = env.now
            yield hold
        log.append((name, granted, env.now))

    for spec in jobs:
        env.process(job(*spec))
    return log


def test_single_server_grants_in_arrival_order() -> None:
    env = Environment()
    server = Resource(env, capacity=1)
    log = _users(env, server, [("a", 0, 10), ("b", 1, 5), ("c", 2, 1), ("d", 2, 1)])
    env.run()
    assert log == [("a", 0, 10), ("b", 10, 15), ("c", 15, 16), ("d", 16, 17)]


def test_capacity_two() -> None:
    env = Environment()
    server = Resource(env, capacity=2)
    log = _users(env, server, [("a", 0, 10), ("b", 0, 4), ("c", 1, 3), ("d", 1, 3)])
    env.run()
    assert sorted(log) == [("a", 0, 10), ("b", 0, 4), ("c", 4, 7), ("d", 7, 10)]


def test_counts_and_queue() -> None:
    env = Environment()
    server = Resource(env, capacity=1)
    _users(env, server, [("a", 0, 10), ("b", 0, 10), ("c", 0, 10)])
    env.run(until=1)
    assert server.count == 1 and len(server.queue) == 2
    assert "1/1 used, 2 waiting" in repr(server)
    env.run()
    assert server.count == 0 and not server.queue


def test_release_returns_a_processed_event_and_is_idempotent() -> None:
    env = Environment()
    server = Resource(env)
    log = []

    def user():
        req = server.request()
        yield req
        done = server.release(req)
        assert done.processed and done.value is None
        yield done  # continues at once
        log.append(env.now)
        server.release(req)  # no-op

    env.process(user())
    env.run()
    assert log == [0] and server.count == 0


def test_releasing_a_queued_request_withdraws_it() -> None:
    env = Environment()
    server = Resource(env)
    first = server.request()
    second = server.request()
    third = server.request()
    assert list(server.queue) == [second, third]
    server.release(second)
    assert list(server.queue) == [third]
    server.release(first)
    assert server.users == [third]
    env.run()
    assert third.processed and not second.triggered


def test_release_of_a_foreign_request_is_refused() -> None:
    env = Environment()
    a, b = Resource(env), Resource(env)
    req = a.request()
    with pytest.raises(ValueError, match="not a request of"):
        b.release(req)
    with pytest.raises(ValueError):
        b.release(env.event())  # type: ignore[arg-type]


@pytest.mark.parametrize("capacity", [0, -1, 1.0, True])
def test_capacity_must_be_a_positive_int(capacity: object) -> None:
    with pytest.raises(ValueError, match="capacity"):
        Resource(Environment(), capacity=capacity)  # type: ignore[arg-type]


def test_interrupted_holder_releases_through_with() -> None:
    from passthru.sim import Interrupt

    env = Environment()
    server = Resource(env)
    log = []

    def holder():
        try:
            with server.request() as req:
                yield req
                yield 100
        except Interrupt:
            log.append(("holder interrupted", env.now))

    def next_user():
        with server.request() as req:
            yield req
            log.append(("next granted", env.now))

    h = env.process(holder())
    env.process(next_user())
    env.run(until=3)
    h.interrupt()
    env.run()
    assert log == [("holder interrupted", 3), ("next granted", 3)]
