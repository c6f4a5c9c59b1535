"""`passthru demo` and `passthru run`: block I/O paths compared, as a table, JSON and a plot."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from passthru.errors import PassthruError
from passthru.scenarios.fio import FioResult
from passthru.scenarios.io_demo import ProgressHook, RunSpec, results_json, run_specs


@contextmanager
def _progress(enabled: bool, delay_s: float = 1.0) -> Iterator[ProgressHook | None]:
    """A rich progress bar on stderr, shown once a run has taken ``delay_s`` (TTY only)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    start = time.monotonic()
    bar: dict[str, Any] = {}
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"),
                        TimeRemainingColumn(), console=Console(stderr=True), transient=True)

    def hook(done: int, total: int, label: str) -> None:
        if "task" not in bar:
            if time.monotonic() - start < delay_s:
                return
            progress.start()
            bar["task"] = progress.add_task(label, total=total)
        progress.update(bar["task"], completed=done, description=label)

    try:
        yield hook
    finally:
        if "task" in bar:
            progress.stop()


def _table(results: list[FioResult], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col, justify in [("path", "left"), ("device", "left"), ("QD", "right"),
                         ("IOPS", "right"), ("mean us", "right"), ("p50 us", "right"),
                         ("p99 us", "right"), ("p99.9 us", "right"), ("exits/IO", "right"),
                         ("irqs/IO", "right"), ("CPU us/IO", "right"), ("IOTLB hit", "right")]:
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in results:
        lat = r.lat_us
        hit = "-" if r.iotlb_hit_rate is None else f"{100 * r.iotlb_hit_rate:.2f}%"
        t.add_row(r.path, r.device, str(r.qd), f"{r.iops:,.0f}", f"{lat['mean']:.1f}",
                  f"{lat['p50']:.1f}", f"{lat['p99']:.1f}", f"{lat['p999']:.1f}",
                  f"{r.exits_per_io:.2f}", f"{r.irqs_per_io:.2f}", f"{r.cpu_us_per_io:.2f}",
                  hit)
    Console(width=140).print(t)


def save_latency_plot(results: list[FioResult], out: Path) -> Path:
    """Latency CDFs, one panel per (device, QD), one curve per path; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import NullFormatter

    panels = sorted({(r.device, r.qd) for r in results})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, (dev, qd) in zip(axes[0], panels, strict=True):
        for r in results:
            if (r.device, r.qd) != (dev, qd) or not len(r.latencies_ns):
                continue
            xs = np.sort(r.latencies_ns) / 1e3
            ys = np.arange(1, len(xs) + 1) / len(xs)
            ax.plot(xs, ys, label=r.path)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short spans
        ax.set_title(f"{dev}, 4 KiB randread, QD{qd}")
        ax.set_xlabel("completion latency (us)")
        ax.set_ylabel("fraction of I/Os")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent or ".")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=100)
        _publish(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _publish(tmp: str, out: Path) -> None:
    """Give the finished temp file the mode a plain open() would (mkstemp makes it 0600),
    then rename it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, out)


def write_json_atomic(doc: dict[str, Any], out: Path) -> None:
    """Temp file in the target directory + rename: readers never see half a file."""
    out = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent or ".")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        _publish(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _output_path(option: str, path: Path, *, not_same_as: Path | None = None) -> Path:
    """Refuse an output file before the run rather than after it: a missing directory, a
    directory, or the scenario itself."""
    if path.is_dir():
        raise PassthruError(f"{option} {path}: is a directory")
    if not path.parent.is_dir():
        raise PassthruError(f"{option} {path}: directory {path.parent} does not exist")
    if not_same_as is not None and path.resolve() == not_same_as.resolve():
        raise PassthruError(f"{option} {path}: would overwrite the scenario itself")
    return path


def _run(specs: list[RunSpec], show_progress: bool) -> list[FioResult]:
    with _progress(show_progress) as hook:
        return run_specs(specs, hook)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.option("--plot", "plot", type=click.Path(dir_okay=False), default=None,
              help="Latency-distribution PNG (default: passthru-demo-latency.png; "
                   "with --json only when given).")
@click.option("--ios", type=click.IntRange(min=10), default=500, show_default=True,
              help="I/Os per QD1 run (QD32 runs do four times as many).")
@click.option("--seed", type=int, default=1, show_default=True)
def demo(as_json: bool, plot: str | None, ios: int, seed: int) -> None:
    """4 KiB random read at QD1 and QD32 over bare metal, passthrough, virtio-blk and
    emulated NVMe, on a NAND and an Optane-class SSD."""
    from passthru.scenarios.io_demo import demo_runs

    plot_path = _output_path("--plot", Path(plot or "passthru-demo-latency.png"))
    specs = demo_runs(ios_qd1=ios, ios_qd32=4 * ios, seed=seed)
    results = _run(specs, True)
    if as_json:
        click.echo(json.dumps(results_json(results), indent=2))
    else:
        _table(results, "4 KiB random read (simulated)")
    if plot or not as_json:
        out = save_latency_plot(results, plot_path)
        if not as_json:
            click.echo(f"latency distribution: {out}")


@click.command()
@click.argument("scenario")
@click.option("--json", "as_json", is_flag=True, help="Also print the results as JSON.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Results file (default: SCENARIO with .results.json next to it).")
def run(scenario: str, as_json: bool, out: str | None) -> None:
    """Run the I/O scenario in SCENARIO (TOML) and write its JSON results."""
    from passthru.scenarios.io_demo import load_scenario

    specs = load_scenario(scenario)
    target = _output_path("--out", Path(out) if out else
                          Path(scenario).with_suffix(".results.json"), not_same_as=Path(scenario))
    results = _run(specs, True)
    doc = results_json(results)
    write_json_atomic(doc, target)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        _table(results, f"{scenario} (simulated)")
        click.echo(f"results: {target}")
