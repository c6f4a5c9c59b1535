"""Named random streams derived from one run seed.

What it models
    Every random draw in a run comes from a stream named after what draws from it
    (``"arrivals"``, ``"nvme0.latency"``). ``Streams(seed).get(name)`` returns a
    ``random.Random`` seeded by SHA-256 of (seed, name): the same seed and name give the same
    sequence in every run, process and platform, and adding a stream never shifts another.

Why ``random.Random``
    Models draw one number per event, and ``random.Random`` scalar draws are several times
    faster than numpy ``Generator`` scalar draws. For bulk draws, :meth:`Streams.numpy`
    returns a numpy ``Generator`` (PCG64) from a separately tagged hash of (seed, name).
    :meth:`Streams.exponential_ns` combines the two for the commonest draw of a queueing
    model (Poisson arrivals, exponential service): one int ns per call, drawn from that
    numpy stream in batches, so a call costs a generator resume instead of a Python-level
    ``expovariate`` and a rounding.

Left out
    Jumping/spawning: independence comes from the cryptographic hash of distinct names,
    which is ample for simulation (Mersenne Twister streams from unrelated 256-bit seeds).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# Bumping the tag changes every stream; only do it on purpose (it changes golden outputs).
_TAG = b"passthru.sim.streams/v1"
# exponential_ns: draws beyond ~40 means have probability < 1e-17, so int64 ns never overflow.
_MAX_MEAN_NS = 1e15


def derive_seed(seed: int, name: str, kind: str = "random") -> int:
    """The 256-bit seed of stream ``name`` under run ``seed`` (stable across processes)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if not isinstance(name, str) or not name:
        raise TypeError(f"stream name must be a non-empty str, got {name!r}")
    material = b"\0".join((_TAG, kind.encode(), str(seed).encode(), name.encode("utf-8")))
    return int.from_bytes(hashlib.sha256(material).digest(), "big")


class Streams:
    """The random streams of one run. ``get(name)`` returns the same object on every call,
    so successive calls continue one sequence."""

    __slots__ = ("seed", "_random", "_numpy")

    def __init__(self, seed: int) -> None:
        derive_seed(seed, "-")  # validate the seed now, not at the first draw
        self.seed = seed
        self._random: dict[str, random.Random] = {}
        self._numpy: dict[str, np.random.Generator] = {}

    def get(self, name: str) -> random.Random:
        """The ``random.Random`` stream called ``name``."""
        rng = self._random.get(name)
        if rng is None:
            rng = self._random[name] = random.Random(derive_seed(self.seed, name))
        return rng

    def numpy(self, name: str) -> np.random.Generator:
        """The numpy ``Generator`` stream called ``name`` (independent of ``get(name)``)."""
        gen = self._numpy.get(name)
        if gen is None:
            import numpy as np

            seed = derive_seed(self.seed, name, "numpy")
            gen = self._numpy[name] = np.random.Generator(np.random.PCG64(seed))
        return gen

    def exponential_ns(self, name: str, mean_ns: float, batch: int = 1024
                       ) -> Callable[[], int]:
        """A function returning the next exponential draw of mean ``mean_ns``, in int ns
        (rounded half to even, as ``units.round_ns``), from the numpy stream ``name``.

        Draws come ``batch`` at a time, so the sequence depends on ``batch`` too; two
        functions made with the same arguments on equal seeds return the same sequence.
        They share the ``numpy(name)`` generator: use one or the other for a name.
        """
        if not 0 < mean_ns <= _MAX_MEAN_NS:  # also refuses NaN
            raise ValueError(f"exponential_ns({name!r}): mean_ns must be > 0 and <= "
                             f"{_MAX_MEAN_NS:.0e}, got {mean_ns!r}")
        if type(batch) is not int or batch < 1:
            raise ValueError(f"exponential_ns({name!r}): batch must be an int >= 1, "
                             f"got {batch!r}")
        return _exponential_batches(self.numpy(name), float(mean_ns), batch).__next__

    def __repr__(self) -> str:
        return f"Streams(seed={self.seed}, names={sorted(self._random.keys() | self._numpy)})"


def _exponential_batches(gen: np.random.Generator, mean_ns: float, batch: int
                         ) -> Iterator[int]:
    import numpy as np

    exponential = gen.exponential
    while True:  # np.rint rounds half to even, like round()
        yield from np.rint(exponential(mean_ns, batch)).astype(np.int64).tolist()


__all__ = ["Streams", "derive_seed"]
