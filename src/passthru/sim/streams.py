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

Left out
    Jumping/spawning: independence comes from the cryptographic hash of distinct names,
    which is ample for simulation (Mersenne Twister streams from unrelated 256-bit seeds).
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# Bumping the tag changes every stream; only do it on purpose (it changes golden outputs).
_TAG = b"passthru.sim.streams/v1"


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

    def __repr__(self) -> str:
        return f"Streams(seed={self.seed}, names={sorted(self._random.keys() | self._numpy)})"


__all__ = ["Streams", "derive_seed"]
