"""Every audit rule fires on one input and stays quiet on another; findings are ranked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from passthru.analysis.audit import RULES, Severity, run_audit
from passthru.importers.lspci_topology import load_lspci
from passthru.importers.sysfs import CmdlineFlags, facts_from_lspci, load_sysfs

DATA = Path(__file__).resolve().parent.parent / "data"
SNAP = DATA / "sysfs"
CLEAN = "xps13_9310_intel_dma"  # Intel, DMA domains, IR on, no override


def audit(name: str):
    return run_audit(*load_sysfs(str(SNAP / name)))


def short_configs(tmp_path: Path, length: int = 256) -> str:
    """The Orion snapshot with every config cut to ``length`` bytes: 256 when read without the
    extended space, 64 (the header only) when read without root."""
    snap = tmp_path / f"short{length}"
    shutil.copytree(SNAP / "orion_o6_lazy_acs_override", snap, symlinks=True)
    for cfg in snap.glob("sys/devices/**/config"):
        cfg.write_bytes(cfg.read_bytes()[:length])
    return str(snap)


def nosid_cmdline(tmp_path: Path) -> str:
    """The clean snapshot booted with intremap=nosid."""
    snap = tmp_path / "nosid"
    shutil.copytree(SNAP / CLEAN, snap, symlinks=True)
    cmdline = snap / "proc" / "cmdline"
    cmdline.write_text(cmdline.read_text().strip() + " intremap=nosid\n")
    return str(snap)


def test_cmdline_spellings():
    assert CmdlineFlags.parse("amd_iommu=fullflush").strict is True
    assert CmdlineFlags.parse("intel_iommu=on,strict").strict is True
    flags = CmdlineFlags.parse("intremap=nosid,no_x2apic_optout")
    assert flags.intremap_nosid and not flags.intremap_off
    assert CmdlineFlags.parse("intremap=off").intremap_off
    assert not CmdlineFlags.parse("quiet -- intremap=nosid").intremap_nosid  # init's args


@pytest.mark.parametrize("length", [64, 256])
def test_config_incomplete_names_the_length_read(tmp_path, length):
    found = [f for f in run_audit(*load_sysfs(short_configs(tmp_path, length))).findings
             if f.rule == "config-incomplete"]
    assert len(found) == 1
    assert any(f"config has {length} bytes" in e for e in found[0].evidence)


# rule id -> (snapshot where it fires, snapshot where it does not)
CASES = {
    "no-iommu": ("xps13_9310_iommu_off", CLEAN),
    "p2p-bypass": (CLEAN, "orion_o6_lazy_acs_override"),
    "identity-domain": ("x570_amd_identity", CLEAN),
    "no-interrupt-remapping": ("xps13_9380_tb3_no_ir", CLEAN),
    "interrupt-remapping-no-sid": ("<nosid>", CLEAN),
    "acs-override": ("orion_o6_lazy_acs_override", CLEAN),
    "mixed-groups": (CLEAN, "orion_o6_lazy_acs_override"),
    "config-incomplete": ("<short>", CLEAN),
    "lazy-invalidation": ("orion_o6_lazy_acs_override", CLEAN),
    "group-disagreement": ("x570_amd_identity", CLEAN),
    "interrupt-remapping-unknown": ("orion_o6_lazy_acs_override", CLEAN),
}


def test_every_rule_has_a_case():
    assert set(CASES) == {r.id for r in RULES}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires_on_one_input_and_not_on_another(rule, tmp_path):
    fires, quiet = CASES[rule]
    special = {"<short>": short_configs, "<nosid>": nosid_cmdline}
    report = (run_audit(*load_sysfs(special[fires](tmp_path))) if fires in special else
              audit(fires))
    found = [f for f in report.findings if f.rule == rule]
    assert len(found) == 1 and found[0].evidence and found[0].summary
    assert rule not in audit(quiet).fired()


def test_findings_are_ranked_by_severity():
    for name in ("x570_amd_identity", "orion_o6_lazy_acs_override", "xps13_9380_tb3_no_ir"):
        sev = [f.severity for f in audit(name).findings]
        assert sev == sorted(sev, reverse=True)
    assert audit("x570_amd_identity").findings[0].severity == Severity.HIGH


def test_no_iommu_is_said_plainly_and_alone():
    report = audit("xps13_9310_iommu_off")
    assert report.fired() == {"no-iommu"}
    f = report.findings[0]
    assert "no active IOMMU" in f.summary
    assert any("intel_iommu=off" in e for e in f.evidence)


def test_evidence_names_the_devices():
    (mixed,) = [f for f in audit(CLEAN).findings if f.rule == "mixed-groups"]
    assert any(e.startswith("group 9 ") and "00:14.0" in e and "00:14.2" in e
               for e in mixed.evidence)  # the Tiger Lake xHCI and its shared SRAM
    (p2p,) = [f for f in audit(CLEAN).findings if f.rule == "p2p-bypass"]
    assert "0000:00:14.3" in p2p.evidence[0]  # the AX201 RCiEP in its own group
    (ident,) = [f for f in audit("x570_amd_identity").findings if f.rule == "identity-domain"]
    assert any("iommu=pt" in e for e in ident.evidence)
    (dis,) = [f for f in audit("x570_amd_identity").findings if f.rule == "group-disagreement"]
    assert any(e.startswith("0000:00:00.2") for e in dis.evidence)  # the IOMMU itself


def test_identity_and_lazy_fall_back_to_the_command_line_without_type_files(tmp_path):
    snap = tmp_path / "notype"
    shutil.copytree(SNAP / CLEAN, snap, symlinks=True)
    for t in snap.glob("sys/kernel/iommu_groups/*/type"):
        t.unlink()
    assert not {"identity-domain", "lazy-invalidation"} & run_audit(*load_sysfs(str(snap))).fired()
    (snap / "proc" / "cmdline").write_text("intel_iommu=on iommu=pt iommu.strict=0\n")
    fired = run_audit(*load_sysfs(str(snap))).fired()
    assert {"identity-domain", "lazy-invalidation"} <= fired


def test_acs_override_groups_are_computed_with_the_override():
    report = audit("orion_o6_lazy_acs_override")
    # The kernel's groups were made with the override, and so are the model's: they agree.
    assert "group-disagreement" not in report.fired()
    assert len(report.groups) == 6  # each root port and endpoint alone


def test_lspci_dumps_audit_too():
    path = DATA / "lspci" / "dell_xps13_9380_whiskeylake_tb3.txt"
    topo = load_lspci(str(path))
    report = run_audit(topo, facts_from_lspci(topo, str(path)))
    assert {"mixed-groups", "p2p-bypass", "interrupt-remapping-unknown"} <= report.fired()
    assert "no-iommu" not in report.fired()
    path = DATA / "lspci" / "lenovo_z510_haswell.txt"  # taken with the IOMMU off
    topo = load_lspci(str(path))
    report = run_audit(topo, facts_from_lspci(topo, str(path)))
    assert report.fired() == {"no-iommu"}
    assert "IOMMU group" in report.findings[0].evidence[0]
