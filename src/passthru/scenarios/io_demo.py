"""I/O path scenarios: TOML files validated into typed runs, the demo matrix, the runner.

A scenario file::

    seed = 1
    [costs]                      # optional overrides of passthru.hv.costs.Costs (ns)
    vm_exit_ns = 1500
    [devices.slowssd]            # optional: a custom device from a preset plus overrides
    preset = "nand"
    read_ns = 120000
    [[runs]]
    path = ["passthrough", "virtio-blk"] # or one name; "all" = every registered path
    device = "nand"                       # a preset (nand, optane) or a [devices] name
    rw = "randread"
    bs = 4096
    qd = 32
    numjobs = 1
    ios = 2000                            # or runtime_us = 10000 (exactly one of them)
    posted_interrupts = true
    notify = "poll"                       # virtio-blk only: userspace, ioeventfd or poll;
                                          # also event_idx, indirect, queue_size
    [virtio_blk_costs]           # optional overrides of hv.backends.virtio_blk.VirtioBlkCosts
    iothread_wakeup_ns = 6000

Every key is checked (unknown keys are errors, values are not coerced: ``qd = true`` is an
error) and every error names its field, e.g.
``runs[0].qd = 5000 exceeds the controller's limit 1023``. The runner builds each path
fresh (a run is a pure function of its configuration and seed) and returns one
:class:`~passthru.scenarios.fio.FioResult` per (path, run).
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from passthru.errors import ConfigError
from passthru.hv.backends.nvme_paths import PathConfig, available_paths, build_path
from passthru.hv.backends.virtio_blk import DEFAULT_VIRTIO_BLK_COSTS, VirtioBlkCosts
from passthru.hv.costs import DEFAULT_COSTS, Costs
from passthru.hw.devices.nvme.namespace import PRESETS, MediaProfile
from passthru.scenarios.fio import RW_MODES, FioJob, FioResult, run_fio

DEMO_PATHS = ("bare-metal", "passthrough", "virtio-blk", "emulated")
DEMO_DEVICES = ("nand", "optane")
DEMO_QDS = (1, 32)


class DeviceModel(BaseModel):
    """A custom device: a preset plus overrides of its MediaProfile fields."""

    # strict: TOML has real types, so `qd = true` or `read_ns = "5"` is a mistake to report,
    # not a value to coerce.
    model_config = ConfigDict(extra="forbid", strict=True)
    preset: str = "nand"
    read_ns: int | None = Field(default=None, ge=0)
    write_ns: int | None = Field(default=None, ge=0)
    flush_ns: int | None = Field(default=None, ge=0)
    overhead_ns: int | None = Field(default=None, ge=0)
    parallelism: int | None = Field(default=None, ge=1)
    bandwidth: int | None = Field(default=None, ge=1)
    lba_size: int | None = None
    max_queue_entries: int | None = Field(default=None, ge=2, le=65536)
    max_io_queues: int | None = Field(default=None, ge=1)
    mdts: int | None = Field(default=None, ge=0, le=15)
    tail_prob: float | None = Field(default=None, ge=0, le=1)
    tail_factor: int | None = Field(default=None, ge=1)
    jitter: float | None = Field(default=None, ge=0, lt=1)


class RunModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    path: str | list[str] = Field(min_length=1)
    device: str = "nand"
    rw: str = "randread"
    bs: int = Field(default=4096, ge=1)
    qd: int = Field(default=1, ge=1)
    numjobs: int = Field(default=1, ge=1)
    ios: int | None = Field(default=None, ge=1)
    runtime_us: int | None = Field(default=None, ge=1)
    rwmixread: int = Field(default=50, ge=0, le=100)
    size: int = Field(default=1 << 30, ge=512)
    posted_interrupts: bool = True
    verify: bool = True
    # virtio-blk only (hv.backends.virtio_blk): how the guest's kick reaches the device
    # model, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, the virtqueue size.
    notify: Literal["userspace", "ioeventfd", "poll"] | None = None
    event_idx: bool | None = None
    indirect: bool | None = None
    queue_size: int | None = Field(default=None, ge=2, le=32768)

    @field_validator("rw")
    @classmethod
    def _rw(cls, v: str) -> str:
        if v not in RW_MODES:
            raise ValueError(f"must be one of {', '.join(RW_MODES)}")
        return v


class ScenarioModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    seed: int = 0
    costs: dict[str, int] = Field(default_factory=dict)
    virtio_blk_costs: dict[str, int] = Field(default_factory=dict)
    devices: dict[str, DeviceModel] = Field(default_factory=dict)
    runs: list[RunModel] = Field(min_length=1)


@dataclass(frozen=True)
class RunSpec:
    """One validated run: a path, a device profile and a fio job."""

    path: str
    device: str
    profile: MediaProfile
    job: FioJob
    posted_interrupts: bool
    costs: Costs
    seed: int
    options: tuple[tuple[str, Any], ...] = ()  # the path's backend-specific knobs

    def path_config(self) -> PathConfig:
        return PathConfig(self.profile, costs=self.costs, seed=self.seed,
                          posted_interrupts=self.posted_interrupts,
                          queue_depth=self.job.iodepth, io_queues=self.job.numjobs,
                          max_io_bytes=max(self.job.bs, 4096),
                          capacity_bytes=max(self.job.size, 1 << 30),
                          options=dict(self.options))


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _validation_message(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = _loc(tuple(err["loc"]))
    if err["type"] == "extra_forbidden":
        name = str(err["loc"][-1])
        fields = _allowed(tuple(err["loc"][:-1]))
        close = difflib.get_close_matches(name, fields, n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else (
            f" (allowed: {', '.join(fields)})" if fields else "")
        return f"{where}: unknown field{hint}"
    if err["type"] == "missing":
        return f"{where}: required field is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return f"{where} = {err.get('input')!r}: {msg}"


def _allowed(loc: tuple[Any, ...]) -> list[str]:
    if not loc:
        return list(ScenarioModel.model_fields)
    if loc[0] == "runs":
        return list(RunModel.model_fields)
    if loc[0] == "virtio_blk_costs":
        return [f.name for f in dataclasses.fields(VirtioBlkCosts)]
    if loc[0] == "devices":
        return list(DeviceModel.model_fields)
    return []


def _profile(name: str, devices: dict[str, DeviceModel], where: str) -> MediaProfile:
    if name in PRESETS:
        return PRESETS[name]
    if name in devices:
        d = devices[name]
        if d.preset not in PRESETS:
            raise ConfigError(f"devices.{name}.preset: device {d.preset!r} does not exist "
                              f"(have: {', '.join(PRESETS)})")
        changes = {k: v for k, v in d.model_dump().items() if k != "preset" and v is not None}
        return PRESETS[d.preset].with_(name=name, **changes)
    have = ", ".join(list(PRESETS) + list(devices))
    raise ConfigError(f"{where}: device {name!r} does not exist (have: {have})")


def build_runs(model: ScenarioModel) -> list[RunSpec]:
    """Check cross-field rules and expand each run over its paths."""
    costs = DEFAULT_COSTS.replace(**model.costs)  # ConfigError names costs.<field>
    virtio_costs = _virtio_blk_costs(model.virtio_blk_costs)
    paths_known = available_paths()
    out = []
    for i, r in enumerate(model.runs):
        w = f"runs[{i}]"
        profile = _profile(r.device, model.devices, f"{w}.device")
        if r.qd > profile.max_queue_depth:
            raise ConfigError(f"{w}.qd = {r.qd} exceeds the controller's limit "
                              f"{profile.max_queue_depth} (device {r.device!r}: CAP.MQES)")
        if r.numjobs > profile.max_io_queues:
            raise ConfigError(f"{w}.numjobs = {r.numjobs} exceeds the I/O queues of device "
                              f"{r.device!r} ({profile.max_io_queues})")
        if r.bs % profile.lba_size:
            raise ConfigError(f"{w}.bs = {r.bs} is not a multiple of the LBA size "
                              f"{profile.lba_size} of device {r.device!r}")
        max_io = 4096 << profile.mdts
        if r.bs > max_io:
            raise ConfigError(f"{w}.bs = {r.bs} exceeds the device's maximum transfer "
                              f"{max_io} (MDTS)")
        if r.size % r.bs or r.size < r.bs * r.numjobs:
            raise ConfigError(f"{w}.size = {r.size} must be a multiple of bs = {r.bs} "
                              "holding one block per job")
        if (r.ios is None) == (r.runtime_us is None):
            raise ConfigError(f"{w}: exactly one of ios or runtime_us is required")
        names = [r.path] if isinstance(r.path, str) else list(r.path)
        if names == ["all"]:
            names = [p for p in DEMO_PATHS if p in paths_known]
        for name in names:
            if name not in paths_known:
                raise ConfigError(f"{w}.path: path {name!r} does not exist "
                                  f"(have: {', '.join(paths_known)})")
        virtio = {k: getattr(r, k) for k in _VIRTIO_OPTIONS if getattr(r, k) is not None}
        if virtio and "virtio-blk" not in names:
            raise ConfigError(f"{w}.{next(iter(virtio))}: applies to path virtio-blk only")
        if "virtio-blk" in names and virtio_costs is not None:
            virtio["virtio_blk_costs"] = virtio_costs
        job = FioJob(rw=r.rw, bs=r.bs, iodepth=r.qd, numjobs=r.numjobs, ios=r.ios,
                     runtime_ns=None if r.runtime_us is None else r.runtime_us * 1000,
                     rwmixread=r.rwmixread, size=r.size, verify=r.verify, seed=model.seed)
        for name in names:
            opts = tuple(sorted(virtio.items())) if name == "virtio-blk" else ()
            out.append(RunSpec(name, r.device, profile, job, r.posted_interrupts, costs,
                               model.seed, opts))
    return out


_VIRTIO_OPTIONS = ("notify", "event_idx", "indirect", "queue_size")


def _virtio_blk_costs(values: dict[str, int]) -> VirtioBlkCosts | None:
    """The scenario's [virtio_blk_costs] over the defaults; None when it has none."""
    if not values:
        return None
    known = {f.name for f in dataclasses.fields(VirtioBlkCosts)}
    for name in values:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            raise ConfigError(f"virtio_blk_costs.{name}: unknown cost{hint}")
    return dataclasses.replace(DEFAULT_VIRTIO_BLK_COSTS, **values)


def parse_scenario(text: str, source: str = "<scenario>") -> list[RunSpec]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        model = ScenarioModel.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_validation_message(exc)}") from None
    try:
        return build_runs(model)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_scenario(path: str | Path) -> list[RunSpec]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read scenario: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a UTF-8 text (TOML) file") from None
    return parse_scenario(text, str(p))


def demo_runs(*, ios_qd1: int = 1000, ios_qd32: int = 4000, seed: int = 1,
              paths: tuple[str, ...] | None = None) -> list[RunSpec]:
    """4 KiB random read at QD1 and QD32 over every path on a NAND and an Optane device."""
    known = available_paths()
    names = [p for p in (paths or DEMO_PATHS) if p in known]
    out = []
    for dev in DEMO_DEVICES:
        for qd in DEMO_QDS:
            job = FioJob(rw="randread", bs=4096, iodepth=qd,
                         ios=ios_qd1 if qd == 1 else ios_qd32, seed=seed)
            for name in names:
                out.append(RunSpec(name, dev, PRESETS[dev], job, True, DEFAULT_COSTS, seed))
    return out


ProgressHook = Callable[[int, int, str], None]  # (done, total, label): I/Os, or runs


def run_specs(specs: list[RunSpec], progress: ProgressHook | None = None) -> list[FioResult]:
    """Run every spec on a freshly built path; results in spec order."""
    # Progress in I/Os; in runs when a run is bounded by time (its I/O count is unknown).
    by_runs = any(s.job.ios is None for s in specs)
    total = len(specs) if by_runs else sum(s.job.ios or 0 for s in specs)
    base = 0
    results = []
    for spec in specs:
        label = f"{spec.path} {spec.device} qd{spec.job.iodepth}"
        hook = None
        if progress is not None and not by_runs:
            def hook(done: int, _n: int, base: int = base, label: str = label) -> None:
                progress(base + done, total, label)
        path = build_path(spec.path, spec.path_config())
        results.append(run_fio(path, spec.job, device=spec.device, progress=hook,
                               posted_interrupts=spec.posted_interrupts))
        base += 1 if by_runs else spec.job.ios or 0
        if progress is not None:
            progress(base, total, label)
    return results


def results_json(results: list[FioResult]) -> dict[str, Any]:
    return {"results": [r.to_json() for r in results]}
