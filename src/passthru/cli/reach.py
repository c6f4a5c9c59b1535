"""`passthru reach HOST.toml`: who can reach what on a host, in plain words.

Loads and validates the host file, boots it (``hv.build``: VMs created, devices assigned
through VFIO, MSIs set up) and prints, per tenant (each VM, then the host), what every
DMA-capable function can read and write in host memory, which peer BARs it reaches without
the IOMMU and which interrupts it can raise (``analysis.reachability``). ``--json`` gives the
same as one JSON document (ranges as inclusive ``[first, last]`` byte addresses). A file that
does not validate prints one ``passthru: error: ...`` line and exits 2.
Left out: reachability on a running scenario's later state (the host right after boot is
analysed), and real hosts (``passthru audit``).
"""

from __future__ import annotations

import json

import click

from passthru.analysis.reachability import analyze
from passthru.config import load_host
from passthru.hv.build import build


@click.command()
@click.argument("host_file", metavar="HOST.toml")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--seed", default=0, show_default=True, help="Seed of the host's random streams.")
def reach(host_file: str, as_json: bool, seed: int) -> None:
    """Print what every device of every tenant can read, write and interrupt."""
    cfg = load_host(host_file)
    built = build(cfg, seed=seed)
    report = analyze(built.host, built.tenants())
    if as_json:
        doc = {"source": cfg.source, "host": cfg.host.name, **report.to_dict()}
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f'host "{cfg.host.name}" ({cfg.source}): reachability after boot\n')
    click.echo(report.describe())
