"""Time units: simulated time is an int number of nanoseconds.

What it models
    The constants ``NS``, ``US``, ``MS``, ``S`` (ns per unit) and conversions into int ns.

The rounding rule
    ``ns``/``us``/``ms``/``s`` are *exact*: they return an int or raise ``ValueError`` when the
    value is not a whole number of ns, so a parameter like ``us(0.0015)`` (1.5 ns) is refused
    instead of silently becoming 1 or 2 ns. A float is taken at its shortest decimal repr
    (``us(0.1)`` is 100 ns, not 100.00000000000001), which is what a person typing it
    means. Computed floats that land between nanoseconds (random draws, ``0.1 + 0.2``)
    must go through :func:`round_ns`, which rounds half to even and says so at the call site.

Left out
    Cycle/frequency units: clock domains belong to the device models that have them.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from numbers import Integral

NS = 1
US = 1_000
MS = 1_000_000
S = 1_000_000_000

_Number = int | float | Fraction | Decimal


def _exact(value: _Number, unit: int, name: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name}() needs a number, got bool {value!r}")
    if isinstance(value, Integral):
        return int(value) * unit
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name}({value!r}): time must be finite")
        exact: Fraction | Decimal = Decimal(repr(value)) * unit
    elif isinstance(value, Decimal | Fraction):
        exact = value * unit
    else:
        raise TypeError(f"{name}() needs a number, got {type(value).__name__} {value!r}")
    if exact != int(exact):
        raise ValueError(
            f"{name}({value!r}) = {exact} ns is not a whole number of nanoseconds; "
            "use passthru.sim.units.round_ns() to round explicitly"
        )
    return int(exact)


def ns(value: _Number) -> int:
    """``value`` nanoseconds as int ns (exact; ``ns(2.0)`` is 2, ``ns(2.5)`` raises)."""
    return _exact(value, NS, "ns")


def us(value: _Number) -> int:
    """``value`` microseconds as int ns (exact; ``us(1.5)`` is 1500)."""
    return _exact(value, US, "us")


def ms(value: _Number) -> int:
    """``value`` milliseconds as int ns (exact)."""
    return _exact(value, MS, "ms")


def s(value: _Number) -> int:
    """``value`` seconds as int ns (exact)."""
    return _exact(value, S, "s")


def round_ns(value: float | int, unit: int = NS) -> int:
    """``value`` in ``unit`` rounded to the nearest int ns (half to even).

    The one deliberate rounding: for computed times such as random service-time draws,
    e.g. ``round_ns(rng.expovariate(1.0) * 8_000)``. NaN and infinities raise ValueError.
    """
    if value.__class__ is float:  # the common case first: one draw per event
        try:
            return round(value * unit)
        except (OverflowError, ValueError):
            raise ValueError(f"round_ns({value!r}): time must be finite") from None
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction | Decimal):
        raise TypeError(f"round_ns() needs a number, got {type(value).__name__} {value!r}")
    if isinstance(value, int):
        return value * unit
    scaled = value * unit
    if isinstance(scaled, float) and not math.isfinite(scaled):
        raise ValueError(f"round_ns({value!r}): time must be finite")
    return round(scaled)


def to_unit(t: int, unit: int) -> float:
    """``t`` ns expressed in ``unit`` as a float, for reports (``to_unit(1500, US) == 1.5``)."""
    return t / unit


def format_ns(t: int) -> str:
    """Exact human form of ``t`` ns in the largest unit that fits: ``'1.5 us'``, ``'250 ns'``."""
    for unit, suffix in ((S, "s"), (MS, "ms"), (US, "us")):
        if abs(t) >= unit:
            text = format(Decimal(t) / unit, "f")
            if "." in text:
                text = text.rstrip("0").rstrip(".")
            return f"{text} {suffix}"
    return f"{t} ns"


__all__ = ["MS", "NS", "S", "US", "format_ns", "ms", "ns", "round_ns", "s", "to_unit", "us"]
