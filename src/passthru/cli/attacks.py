"""`passthru attacks` and `passthru containers`: isolation attacks replayed on the simulator.

`passthru attacks` runs every attack of ``scenarios.attacks.catalog`` in its open and its
blocked configuration and prints them side by side (a rich table) with the machine's
evidence: fault records, ACS violations, bytes changed, interrupts raised. `passthru
containers` prints what a tenant using a device through the host kernel's driver (container,
identity or translated default domain) is exposed to next to a VM with VFIO passthrough, and
the attack outcomes on each. ``--json`` gives one JSON document instead. Both exit 1 when an
outcome disagrees with what its configuration should give (that is a model bug).
Left out: choosing attacks or knobs on the command line (the catalog is small and fixed).
"""

from __future__ import annotations

import json
import shutil

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from passthru.scenarios.attacks.catalog import AttackOutcome


def _console() -> Console:
    width = max(150, shutil.get_terminal_size((150, 40)).columns)
    return Console(width=width, highlight=False, soft_wrap=False)


def _cell(outcome: AttackOutcome, *, with_config: bool = True) -> Text:
    text = Text()
    if with_config:
        text.append(outcome.configuration + "\n", style="bold")
    style = "red bold" if outcome.succeeded else "green bold"
    text.append(outcome.verdict, style=style)
    if not outcome.as_expected:
        text.append("  (UNEXPECTED)", style="magenta bold")
    for line in outcome.evidence:
        text.append("\n- " + line)
    return text


@click.command()
@click.option("--seed", default=0, show_default=True, help="Seed of every run.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def attacks(seed: int, as_json: bool) -> None:
    """Run the isolation attacks, each open and blocked, side by side with evidence."""
    from passthru.scenarios.attacks.catalog import run_catalog

    rows = run_catalog(seed)
    ok = all(o.as_expected and b.as_expected for _, o, b in rows)
    if as_json:
        click.echo(json.dumps({
            "seed": seed,
            "all_as_expected": ok,
            "attacks": [{"name": a.name, "title": a.title, "knob": a.knob,
                         "defence": a.defence, "open": o.to_json(), "blocked": b.to_json()}
                        for a, o, b in rows],
        }, indent=2))
    else:
        table = Table(title=f"Isolation attacks on the simulated host (seed {seed})",
                      show_lines=True, expand=True)
        table.add_column("attack", width=30)
        table.add_column("open configuration", ratio=1)
        table.add_column("blocked configuration", ratio=1)
        for a, o, b in rows:
            table.add_row(Text(f"{a.name}\n", style="bold") + Text(
                f"{a.title}\ndefence: {a.defence}"), _cell(o), _cell(b))
        console = _console()
        console.print(table)
        n = 2 * len(rows)
        console.print(f"{n} runs, " + ("all as expected" if ok else "SOME UNEXPECTED"))
    if not ok:
        raise SystemExit(1)


@click.command()
@click.option("--device", "device_class", type=click.Choice(["nvme", "nic"]), default="nvme",
              show_default=True, help="Device class the tenant uses.")
@click.option("--seed", default=0, show_default=True, help="Seed of every run.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def containers(device_class: str, seed: int, as_json: bool) -> None:
    """Containers (host driver) versus VMs (VFIO passthrough): exposure and attacks."""
    from passthru.scenarios.containers import compare

    exposures = compare(device_class, seed=seed)
    ok = all(o.as_expected for e in exposures for o in e.outcomes)
    if as_json:
        click.echo(json.dumps({"seed": seed, "device_class": device_class,
                               "all_as_expected": ok,
                               "models": [e.to_json() for e in exposures]}, indent=2))
        if not ok:
            raise SystemExit(1)
        return
    console = _console()
    table = Table(title=f"What a tenant using a {device_class} device is exposed to",
                  show_lines=True, expand=True)
    table.add_column("", width=20)
    for e in exposures:
        table.add_column(e.title, ratio=1)
    table.add_row("entry points", *[Text("\n".join(f"- {p.name} [{p.kind}]: {p.handler}"
                                                   for p in e.entry_points))
                                    for e in exposures])
    table.add_row("kernel attack surface",
                  *[Text("\n".join(f"- {s}" for s in e.kernel_surface)) for e in exposures])
    table.add_row("memory the device's domain reaches (HPA)",
                  *[Text("\n".join(f"- {r}" for r in e.reach)
                         + f"\n{e.reach_bytes:#x} bytes") for e in exposures])
    table.add_row("host kernel reachable / co-tenant reachable",
                  *[Text(f"{_yes(e.host_kernel_reachable)} / {_yes(e.co_tenant_reachable)}")
                    for e in exposures])
    console.print(table)
    attacks_table = Table(title="Attacks by tenant-a's device, run on each model",
                          show_lines=True, expand=True)
    attacks_table.add_column("attack", width=20)
    for e in exposures:
        attacks_table.add_column(e.title, ratio=1)
    for i, first in enumerate(exposures[0].outcomes):
        attacks_table.add_row(first.name, *[_cell(e.outcomes[i], with_config=False)
                                             for e in exposures])
    console.print(attacks_table)
    console.print("all as expected" if ok else "SOME UNEXPECTED")
    if not ok:
        raise SystemExit(1)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
