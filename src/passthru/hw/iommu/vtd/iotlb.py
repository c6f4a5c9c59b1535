"""The VT-d translation caches: IOTLB and context cache (Intel VT-d spec 6.1, 6.2, 6.5).

What is modelled:

- ``Iotlb``: caches leaf translations of second-level tables, tagged (domain id, page size,
  page number) with the effective R/W permissions (spec 6.2.2: "IOTLB entries are tagged by
  DID"), finite capacity (``capacity`` entries) and least-recently-used replacement. Entries are
  only created by successful walks (not-present entries are not cached, as with CAP.CM=0), and an
  entry stays until it is evicted or invalidated: a DMA through a stale entry after software
  changed the table in memory without invalidating still succeeds, as on hardware.
  Invalidation: global, domain-selective, and page-selective-within-domain with the address
  mask AM (spec 6.5.1.2 / 6.5.2.3: the 2^AM 4 KiB pages at ADDR aligned down to 2^AM pages;
  any entry, of any page size, overlapping that range goes).
- ``ContextCache``: source-id -> decoded present context entry (spec 6.2.1), finite capacity,
  LRU; invalidated globally, by domain, or by device with the function mask FM (6.5.1.1).

Keys are plain ints so the hit path is one dict probe: ``did << 54 | level << 52 | pfn``
where ``pfn`` is the (64-bit) input address shifted by the page size of ``level`` (1 = 4 KiB,
2 = 2 MiB, 3 = 1 GiB). The IOTLB is a plain dict kept in recency order (a hit pops and
re-inserts its key; the first key is the least recently used), which measured cheaper than
``OrderedDict.move_to_end``. The context cache keeps, beside its entries, ``fast``: source-id
-> IOTLB key base, the one probe the hit path makes before the IOTLB; its recency is refreshed
by lookups on the miss path only (IOTLB hits do not touch it), so its replacement is LRU as
seen by IOTLB misses.

Left out: paging-structure caches (SL-PML4E/PDPE/PDE caches; the IH hint therefore has no
effect), the device-TLB (ATS), PASID-tagged and first-level entries, and the timing of a
lookup (the cost model owns time).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from passthru.hw.iommu.vtd.entries import ContextEntry, level_shift

DID_SHIFT = 54
LEVEL_SHIFT = 52


def iotlb_key(did: int, level: int, iova: int) -> int:
    return (did << DID_SHIFT) | (level << LEVEL_SHIFT) | (iova >> level_shift(level))


class Translation(NamedTuple):
    """A successful DMA translation of one page, as an IOTLB entry holds it.

    ``hpa`` is the host physical address of the start of the page that contains the request's
    input address, ``iova`` the start of that page in the input space; the byte at input
    address ``a`` is at ``hpa + (a & (page_size - 1))`` (``address(a)``). The object is immutable
    and shared: an IOTLB hit returns the cached object itself. ``domain_id`` is None for a
    request that was not translated (translation disabled). A NamedTuple because every IOTLB
    miss builds one: it constructs ~3x faster than a frozen dataclass (benchmarks/bench_iommu).
    """

    hpa: int
    page_size: int
    readable: bool
    writable: bool
    domain_id: int | None
    iova: int

    def address(self, iova: int) -> int:
        """Host physical address of input address ``iova`` (which must lie in this page)."""
        return self.hpa | (iova & (self.page_size - 1))

    def allows(self, is_write: bool) -> bool:
        return self.writable if is_write else self.readable

    def __repr__(self) -> str:
        perms = ("R" if self.readable else "-") + ("W" if self.writable else "-")
        return (
            f"Translation({self.iova:#x}->{self.hpa:#x}, {self.page_size:#x}, {perms}, "
            f"did={self.domain_id})"
        )


class Iotlb:
    """Finite LRU IOTLB of leaf translations keyed by ``iotlb_key``."""

    def __init__(self, capacity: int = 512) -> None:
        if capacity < 1:
            raise ValueError(f"IOTLB capacity {capacity} must be at least 1")
        self.capacity = capacity
        self.entries: dict[int, Translation] = {}  # least recently used first
        self._by_domain: dict[int, set[int]] = {}
        self.large_entries = 0  # entries with level >= 2: lets lookups skip those probes
        self.misses = 0  # ``lookup`` misses (the remapper's hit path does not come here)
        self.evictions = 0
        self.invalidated = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Translation]:
        return iter(self.entries.values())

    def __repr__(self) -> str:
        return (
            f"Iotlb({len(self.entries)}/{self.capacity}, misses={self.misses}, "
            f"evictions={self.evictions})"
        )

    def lookup(self, did: int, iova: int) -> Translation | None:
        """The cached translation of ``iova`` in domain ``did`` (marks it most recently used)."""
        entries = self.entries
        levels = (1, 2, 3) if self.large_entries else (1,)
        for level in levels:
            key = iotlb_key(did, level, iova)
            t = entries.pop(key, None)
            if t is not None:
                entries[key] = t  # most recently used
                return t
        self.misses += 1
        return None

    def insert(self, did: int, level: int, translation: Translation) -> None:
        key = iotlb_key(did, level, translation.iova)
        entries = self.entries
        if entries.pop(key, None) is not None:
            self._forget(key)
        elif len(entries) >= self.capacity:
            old_key = next(iter(entries))  # LRU replacement
            del entries[old_key]
            self._forget(old_key)
            self.evictions += 1
        entries[key] = translation
        keys = self._by_domain.get(did)
        if keys is None:  # no setdefault(did, set()): it would build a set on every miss
            keys = self._by_domain[did] = set()
        keys.add(key)
        if level > 1:
            self.large_entries += 1

    def _forget(self, key: int) -> None:
        did = key >> DID_SHIFT
        keys = self._by_domain.get(did)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_domain[did]
        if (key >> LEVEL_SHIFT) & 3 > 1:
            self.large_entries -= 1

    def _drop(self, key: int) -> None:
        del self.entries[key]
        self._forget(key)
        self.invalidated += 1

    def restore(self, items: tuple[tuple[int, Translation], ...]) -> None:
        """Replace the contents with ``items`` (key, entry), least recently used first."""
        self.entries.clear()
        self._by_domain.clear()
        self.large_entries = 0
        for key, t in items:
            self.entries[key] = t
            self._by_domain.setdefault(key >> DID_SHIFT, set()).add(key)
            if (key >> LEVEL_SHIFT) & 3 > 1:
                self.large_entries += 1

    def invalidate_all(self) -> int:
        """Global invalidation; returns the number of entries removed."""
        n = len(self.entries)
        self.entries.clear()
        self._by_domain.clear()
        self.large_entries = 0
        self.invalidated += n
        return n

    def invalidate_domain(self, did: int) -> int:
        """Domain-selective invalidation."""
        keys = self._by_domain.pop(did, set())
        for key in keys:
            del self.entries[key]
            if (key >> LEVEL_SHIFT) & 3 > 1:
                self.large_entries -= 1
        self.invalidated += len(keys)
        return len(keys)

    def invalidate_pages(self, did: int, addr: int, am: int) -> int:
        """Page-selective-within-domain invalidation of 2^am 4 KiB pages at ``addr``.

        Spec 6.5.1.2: ADDR's low ``am`` page-number bits are ignored, so the range is
        ``addr`` aligned down to ``4 KiB << am``; every entry overlapping it is removed.
        """
        size = 1 << (12 + am)
        start = addr & ~(size - 1)
        end = start + size
        keys = self._by_domain.get(did)
        if not keys:
            return 0
        n = 0
        if (1 << am) <= 2 * len(keys):  # enumerate the candidate keys of each level
            entries = self.entries
            for level in (1, 2, 3) if self.large_entries else (1,):
                shift = level_shift(level)
                base = (did << DID_SHIFT) | (level << LEVEL_SHIFT)
                for pfn in range(start >> shift, ((end - 1) >> shift) + 1):
                    key = base | pfn
                    if key in entries:
                        self._drop(key)
                        n += 1
        else:  # scan this domain's entries
            for key in list(keys):
                level = (key >> LEVEL_SHIFT) & 3
                shift = level_shift(level)
                page = (key & ((1 << LEVEL_SHIFT) - 1)) << shift
                if page < end and start < page + (1 << shift):
                    self._drop(key)
                    n += 1
        return n


class CachedContext:
    """A context-cache entry: the decoded context entry plus what the hit path needs."""

    __slots__ = (
        "source_id",
        "entry",
        "did",
        "tt",
        "fpd",
        "levels",
        "aw_bits",
        "slptptr",
        "limit",
        "key1",
        "key2",
        "key3",
    )

    def __init__(self, source_id: int, entry: ContextEntry, levels: int, aw_bits: int) -> None:
        self.source_id = source_id
        self.entry = entry
        self.did = entry.did
        self.tt = entry.tt
        self.fpd = entry.fpd
        self.levels = levels
        self.aw_bits = aw_bits
        self.slptptr = entry.slptptr
        self.limit = 1 << aw_bits
        base = self.did << DID_SHIFT
        self.key1 = base | (1 << LEVEL_SHIFT)
        self.key2 = base | (2 << LEVEL_SHIFT)
        self.key3 = base | (3 << LEVEL_SHIFT)

    def __repr__(self) -> str:
        return f"CachedContext(sid={self.source_id:#06x}, {self.entry!r})"


class ContextCache:
    """Finite LRU context cache: source-id -> ``CachedContext``."""

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError(f"context cache capacity {capacity} must be at least 1")
        self.capacity = capacity
        self.entries: dict[int, CachedContext] = {}  # least recently used first
        self.fast: dict[int, int] = {}  # source-id -> IOTLB key base, while translation is on
        self.fast_enabled = False
        self.misses = 0
        self.evictions = 0
        self.invalidated = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"ContextCache({len(self.entries)}/{self.capacity}, misses={self.misses})"

    def lookup(self, source_id: int) -> CachedContext | None:
        cc = self.entries.pop(source_id, None)
        if cc is not None:
            self.entries[source_id] = cc  # most recently used
        return cc

    def insert(self, cc: CachedContext) -> None:
        entries = self.entries
        sid = cc.source_id
        if entries.pop(sid, None) is None and len(entries) >= self.capacity:
            self._remove(next(iter(entries)))  # LRU replacement
            self.evictions += 1
        entries[sid] = cc
        if self.fast_enabled:
            self.fast[sid] = cc.key1

    def _remove(self, sid: int) -> None:
        del self.entries[sid]
        self.fast.pop(sid, None)

    def set_fast(self, enabled: bool) -> None:
        """Translation turned on or off: the hit path's index follows (GSTS.TES)."""
        self.fast_enabled = enabled
        self.fast.clear()  # in place: the hit path holds a bound ``fast.get``
        if enabled:
            self.fast.update((sid, cc.key1) for sid, cc in self.entries.items())

    def restore(self, items: tuple[tuple[int, CachedContext], ...]) -> None:
        """Replace the contents with ``items`` (source-id, entry), least recently used first."""
        self.entries.clear()
        self.entries.update(items)
        self.set_fast(self.fast_enabled)

    def invalidate_all(self) -> int:
        n = len(self.entries)
        self.entries.clear()
        self.fast.clear()
        self.invalidated += n
        return n

    def invalidate_domain(self, did: int) -> int:
        keys = [sid for sid, cc in self.entries.items() if cc.did == did]
        for sid in keys:
            self._remove(sid)
        self.invalidated += len(keys)
        return len(keys)

    def invalidate_device(self, source_id: int, fm: int = 0) -> int:
        """Device-selective; FM masks function-number bits (0: none, 1: bit 2, 2: 2:1, 3: 2:0)."""
        ignore = (0, 0b100, 0b110, 0b111)[fm & 3]
        want = source_id & ~ignore
        keys = [sid for sid in self.entries if sid & ~ignore == want]
        for sid in keys:
            self._remove(sid)
        self.invalidated += len(keys)
        return len(keys)
