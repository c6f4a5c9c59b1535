"""The `passthru` command line. User errors print one line and exit with code 2."""

from __future__ import annotations

import json
import sys

import click

from passthru.errors import PassthruError


class _Cli(click.Group):
    """Turns every PassthruError into `passthru: error: ...` and exit code 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except PassthruError as exc:
            click.echo(f"passthru: error: {exc}", err=True)
            ctx.exit(2)
        except click.UsageError as exc:  # a bad option or argument: one line too, not usage
            where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
            click.echo(f"passthru: error: {where}{exc.format_message()}", err=True)
            ctx.exit(2)


@click.group(cls=_Cli)
@click.version_option(package_name="passthru")
def cli() -> None:
    """passthru: a digital twin of a host doing IOMMU device passthrough."""


@cli.command()
@click.option("--lspci", "lspci_file", type=click.Path(dir_okay=False),
              help="A root `lspci -vvv` (or -vvv -nn) dump of a real machine.")
@click.option("--example", default="workstation", show_default=True,
              help="Bundled example host to use when no --lspci is given.")
@click.option("--acs-override", default=None, metavar="OPTS",
              help="What-if: pcie_acs_override=downstream,multifunction,id:vvvv:dddd.")
@click.option("--p2p", is_flag=True, help="Also report peer-to-peer reachability across groups.")
@click.option("--no-rc-p2p", is_flag=True,
              help="Assume the root complex never routes peer-to-peer between root ports.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def groups(lspci_file: str | None, example: str, acs_override: str | None, p2p: bool,
           no_rc_p2p: bool, as_json: bool) -> None:
    """Print IOMMU groups as Linux computes them."""
    from passthru.analysis.acs import AcsOverride
    from passthru.analysis.groups import compute_iommu_groups
    from passthru.analysis.p2p import p2p_report
    from passthru.report.groups import (
        compare_with_reported,
        format_groups,
        format_p2p,
        groups_json,
        p2p_json,
    )

    if lspci_file:
        from passthru.importers.lspci_topology import import_warnings, load_lspci

        topo = load_lspci(lspci_file)
        for warning in import_warnings(topo):
            click.echo(f"passthru: warning: {warning}", err=True)
    else:
        from passthru.scenarios.example_hosts import EXAMPLE_HOSTS

        if example not in EXAMPLE_HOSTS:
            raise PassthruError(f"--example: unknown host {example!r} "
                                f"(have: {', '.join(sorted(EXAMPLE_HOSTS))})")
        topo = EXAMPLE_HOSTS[example]()
    if no_rc_p2p:
        topo.rc_p2p = False
    override = AcsOverride.parse(acs_override) if acs_override is not None else None
    result = compute_iommu_groups(topo, override)
    disagreements = compare_with_reported(result) if override is None else []
    report = p2p_report(topo, override) if (p2p or override) else None
    if as_json:
        doc: dict[str, object] = groups_json(result)
        if disagreements:
            doc["disagreements"] = [d.__dict__ for d in disagreements]
        if report is not None:
            doc["p2p_understated"] = p2p_json(report)
        click.echo(json.dumps(doc, indent=2, default=list))
        return
    click.echo(format_groups(result))
    if override:
        click.echo(f"\nWarning: pcie_acs_override={acs_override} makes Linux's groups "
                   "understate peer-to-peer reachability.")
    if disagreements:
        click.echo(f"\n{len(disagreements)} device(s) where the computed groups disagree with "
                   "the dump's `IOMMU group:` lines:")
        for d in disagreements:
            click.echo(f"  {d.describe()}")
    if report is not None:
        click.echo("\n" + format_p2p(report))


from passthru.cli.check import check as _check  # noqa: E402

cli.add_command(_check)

from passthru.cli.io import demo as _demo  # noqa: E402
from passthru.cli.io import run as _run  # noqa: E402

cli.add_command(_demo)
cli.add_command(_run)

from passthru.cli.audit import audit as _audit  # noqa: E402

cli.add_command(_audit)

from passthru.cli.attacks import attacks as _attacks  # noqa: E402
from passthru.cli.attacks import containers as _containers  # noqa: E402

cli.add_command(_attacks)
cli.add_command(_containers)


from passthru.cli.reach import reach as _reach  # noqa: E402

cli.add_command(_reach)


def main() -> None:
    sys.exit(cli.main(standalone_mode=True))


if __name__ == "__main__":
    main()
