"""A shared resource with FIFO queueing (SimPy's ``Resource``, kept small).

What it models
    ``capacity`` identical units (a server, a queue slot, a DMA engine). ``request()``
    returns a :class:`Request` event that succeeds when a unit is granted; units are granted
    in request order.

What it follows
    ``simpy.resources.resource.Resource``: same API, same context-manager use, a grant
    succeeds the request event at the current time (so the waiter resumes in this instant).

Differences and omissions
    ``release()`` is immediate: it frees the unit and grants it to the next waiter at once,
    where SimPy does that one event later (the grant time is the same). It returns an
    already-processed event, so ``yield res.release(req)`` is allowed and continues at once.
    No priority or preemptive variants, no stores or containers.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from passthru.sim.events import PENDING, Event, _new

if TYPE_CHECKING:
    from passthru.sim.kernel import Environment


class Request(Event):
    """A claim on one unit of a :class:`Resource`; succeeds when the unit is granted.

    Use it as a context manager, so the unit is released (or the claim withdrawn) on every
    exit path, including interrupt and cancel::

        with server.request() as req:
            yield req
            yield service_time
    """

    __slots__ = ("resource",)

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.env)
        self.resource = resource

    def __enter__(self) -> Request:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Release the unit (or withdraw the claim); the next queued requests are granted
        at once, in FIFO order. This is Resource.release's body: the with-block is the hot
        path (one frame fewer than a call from here)."""
        resource = self.resource
        users = resource.users
        try:
            users.remove(self)
        except ValueError:
            try:
                resource.queue.remove(self)  # still queued: withdraw it
            except ValueError:
                pass  # released before
            return
        queue = resource.queue
        if queue:
            due = resource.env._due
            capacity = resource.capacity
            while queue and len(users) < capacity:
                granted = queue.popleft()
                users.append(granted)
                granted._value = None
                due.append(granted)

    def __repr__(self) -> str:
        return f"<Request {self.state} on {self.resource!r}>"


class Resource:
    """``capacity`` identical units granted to requests in FIFO order.

    Releasing a request still queued withdraws it; releasing twice is a no-op (so an early
    ``release`` inside a ``with`` block is fine).
    """

    __slots__ = ("env", "capacity", "users", "queue")

    def __init__(self, env: Environment, capacity: int = 1) -> None:
        if type(capacity) is not int or capacity < 1:
            raise ValueError(f"Resource capacity must be an int >= 1, got {capacity!r}")
        self.env = env
        self.capacity = capacity
        self.users: list[Request] = []  # granted, not yet released
        self.queue: deque[Request] = deque()  # waiting, oldest first

    @property
    def count(self) -> int:
        """Units in use."""
        return len(self.users)

    def __repr__(self) -> str:
        return f"<Resource {len(self.users)}/{self.capacity} used, {len(self.queue)} waiting>"

    def request(self) -> Request:
        """Claim a unit: the returned event succeeds (now, or when a unit frees up)."""
        env = self.env
        # Request(self) inlined: one request per customer is on the hot path.
        req = _new(Request)
        req.env = env
        req.callbacks = []
        req._ok = True
        req._defused = False
        req.resource = self
        if len(self.users) < self.capacity:
            self.users.append(req)
            req._value = None
            env._due.append(req)
        else:
            req._value = PENDING
            self.queue.append(req)
        return req

    def release(self, request: Request) -> Event:
        """Free ``request``'s unit (or withdraw it); returns an already-processed event."""
        if request.__class__ is not Request or request.resource is not self:
            raise ValueError(f"{request!r} is not a request of {self!r}")
        request.__exit__(None, None, None)
        done = Event(self.env)
        done._value = None
        done.callbacks = None
        return done


__all__ = ["Request", "Resource"]
