"""Event-dispatch benchmark: an M/M/1 queue on passthru.sim and on SimPy.

One server, Poisson arrivals (mean inter-arrival 10 us), exponential service (mean 8 us,
load 0.8). Both kernels run the same generator-process model, drawing inter-arrival and
service times in int ns from identically seeded ``passthru.sim.Streams``
(``Streams.exponential_ns``, the draw passthru offers models); SimPy gets the same int
delays. Per-customer waiting times must be identical, then customers per second are
printed for each kernel and their ratio.

    python benchmarks/bench_sim.py              # N = 100000 and 1000000
    python benchmarks/bench_sim.py 20000 --seed 7 --repeat 5

Times are CPU time of this process, best of ``--repeat`` interleaved runs, so that load
from other processes on the machine skews neither kernel.

Each N runs three ways: with the draws in the model (each customer draws its delays as it
goes, the end-to-end figure); the same with ``random.Random.expovariate`` and ``round_ns``
per draw, as a model written without ``exponential_ns`` would; and with the delays drawn
before the clock starts, which times the kernels alone. The ``less the draws`` line
estimates the kernels-alone ratio from the end-to-end run by subtracting the draws' cost
measured alone.

The ``passthru (timeout)`` row is the same model written with ``yield env.timeout(d)`` as
in SimPy instead of ``yield d``: it shows what the allocation-free delay path buys.
"""

from __future__ import annotations

import argparse
import gc
import platform
import time
from collections.abc import Callable

import simpy

from passthru.sim import Environment, Resource, Streams
from passthru.sim.units import US, round_ns

MEAN_INTERARRIVAL_NS = 10 * US
MEAN_SERVICE_NS = 8 * US


Draws = tuple[Callable[[], int], Callable[[], int]]  # next inter-arrival, next service (ns)


def _draws(seed: int) -> Draws:
    """Inter-arrival and service draw functions; identical sequences for identical seeds."""
    streams = Streams(seed)
    return (streams.exponential_ns("mm1.arrivals", MEAN_INTERARRIVAL_NS),
            streams.exponential_ns("mm1.service", MEAN_SERVICE_NS))


def _expovariate_draws(seed: int) -> Draws:
    """The same model's draws one ``expovariate`` and one ``round_ns`` at a time."""
    streams = Streams(seed)
    arrivals = streams.get("mm1.arrivals").expovariate
    service = streams.get("mm1.service").expovariate

    def next_arrival() -> int:
        return round_ns(arrivals(1.0) * MEAN_INTERARRIVAL_NS)

    def next_service() -> int:
        return round_ns(service(1.0) * MEAN_SERVICE_NS)

    return next_arrival, next_service


def mm1_passthru(n: int, draws: Draws) -> list[int]:
    next_arrival, next_service = draws
    env = Environment()
    server = Resource(env, capacity=1)
    waits = [0] * n

    def customer(i: int, service: int):  # type: ignore[no-untyped-def]
        arrived = env.now
        with server.request() as req:
            yield req
            waits[i] = env.now - arrived
            yield service

    def source():  # type: ignore[no-untyped-def]
        for i in range(n):
            yield next_arrival()
            env.process(customer(i, next_service()))

    env.process(source())
    env.run()
    return waits


def mm1_passthru_timeout(n: int, draws: Draws) -> list[int]:
    next_arrival, next_service = draws
    env = Environment()
    server = Resource(env, capacity=1)
    waits = [0] * n

    def customer(i: int, service: int):  # type: ignore[no-untyped-def]
        arrived = env.now
        with server.request() as req:
            yield req
            waits[i] = env.now - arrived
            yield env.timeout(service)

    def source():  # type: ignore[no-untyped-def]
        for i in range(n):
            yield env.timeout(next_arrival())
            env.process(customer(i, next_service()))

    env.process(source())
    env.run()
    return waits


def mm1_simpy(n: int, draws: Draws) -> list[int]:
    next_arrival, next_service = draws
    env = simpy.Environment()
    server = simpy.Resource(env, capacity=1)
    waits = [0] * n

    def customer(i: int, service: int):  # type: ignore[no-untyped-def]
        arrived = env.now
        with server.request() as req:
            yield req
            waits[i] = env.now - arrived
            yield env.timeout(service)

    def source():  # type: ignore[no-untyped-def]
        for i in range(n):
            yield env.timeout(next_arrival())
            env.process(customer(i, next_service()))

    env.process(source())
    env.run()
    return waits


def _predrawn(seed: int, n: int) -> Draws:
    """The same sequences as ``_draws``, drawn before the clock starts: the kernels' own
    cost is then all that is timed (a list iterator's ``__next__`` is a C call)."""
    next_arrival, next_service = _draws(seed)
    arrivals = [next_arrival() for _ in range(n)]
    services = [next_service() for _ in range(n)]
    return iter(arrivals).__next__, iter(services).__next__


def draws_only(n: int, draws: Draws) -> list[int]:
    """The random draws both kernels make, without a kernel: their shared cost."""
    next_arrival, next_service = draws
    for _ in range(n):
        next_arrival()
        next_service()
    return []


Model = Callable[[int, Draws], list[int]]


DRAWS: dict[str, Callable[[int, int], Draws]] = {
    "draws in the model (Streams.exponential_ns)": lambda seed, n: _draws(seed),
    "draws in the model (expovariate + round_ns)": lambda seed, n: _expovariate_draws(seed),
    "delays drawn before the clock starts": lambda seed, n: _predrawn(seed, n),
}
END_TO_END = next(iter(DRAWS))


def _timed(fn: Model, n: int, seed: int, how: str) -> tuple[list[int], float]:
    """Run ``fn`` once with draws made ``how``; return its waits and the CPU seconds."""
    draws = DRAWS[how](seed, n)
    gc.collect()
    # CPU time of this process: other load on the machine does not count against either
    # kernel (it would, with wall-clock time, whichever kernel it happened to overlap).
    start = time.process_time()
    waits = fn(n, draws)
    return waits, time.process_time() - start


KERNELS: tuple[tuple[str, Model], ...] = (
    ("passthru", mm1_passthru),
    ("passthru (timeout)", mm1_passthru_timeout),
    ("simpy", mm1_simpy),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="*", type=int, default=[100_000, 1_000_000],
                        help="numbers of customers (default: 100000 1000000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per kernel, interleaved; the fastest counts (default 3)")
    args = parser.parse_args(argv)

    print(f"python {platform.python_version()}, simpy {simpy.__version__}, seed {args.seed}")
    failed = False
    for n in args.n:
        for how in DRAWS:
            best = {label: float("inf") for label, _ in KERNELS}
            waits: dict[str, list[int]] = {}
            for _ in range(args.repeat):
                for label, fn in KERNELS:
                    waits[label], seconds = _timed(fn, n, args.seed, how)
                    best[label] = min(best[label], seconds)
            ref = waits["simpy"]
            same = all(w == ref for w in waits.values())
            failed |= not same
            print(f"N = {n}, {how}: per-customer waits identical: {'yes' if same else 'NO'} "
                  f"(mean wait {sum(ref) / n / US:.2f} us), best of {args.repeat} (CPU time)")
            for label, _ in KERNELS:
                print(f"  {label:<20} {n / best[label]:>12,.0f} customers/s  "
                      f"({best[label]:.2f} s)")
            print(f"  ratio passthru/simpy {best['simpy'] / best['passthru']:>11.2f}x"
                  f"   (timeout style {best['simpy'] / best['passthru (timeout)']:.2f}x)")
            if how == END_TO_END:  # the two draws per customer, timed alone
                draws = min(_timed(draws_only, n, args.seed, how)[1]
                            for _ in range(args.repeat))
                kernel_ratio = (best["simpy"] - draws) / (best["passthru"] - draws)
                print(f"  less the draws       {kernel_ratio:>11.2f}x"
                      f"   ({draws / n * 1e6:.2f} us/customer of shared random draws)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
