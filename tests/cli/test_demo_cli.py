"""`passthru demo` and `passthru run`: JSON shape, files written, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from passthru.cli.main import cli

EXAMPLE = Path(__file__).parents[2] / "examples" / "nvme_scenario.toml"
KEYS = {"path", "device", "qd", "iops", "lat_us", "exits_per_io", "irqs_per_io",
        "cpu_us_per_io"}


def test_demo_json_has_every_path_device_and_qd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["demo", "--json", "--ios", "20", "--plot", "lat.png"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    rows = doc["results"]
    assert {(r["device"], r["qd"]) for r in rows} == {("nand", 1), ("nand", 32),
                                                    ("optane", 1), ("optane", 32)}
    assert {"bare-metal", "passthrough", "emulated"} <= {r["path"] for r in rows}
    for r in rows:
        assert KEYS <= set(r) and set(r["lat_us"]) == {"mean", "p50", "p99", "p999"}
        assert r["path"] in ("bare-metal", "passthrough", "emulated", "virtio-blk")
    assert (tmp_path / "lat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_table_and_default_plot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["demo", "--ios", "10"])
    assert res.exit_code == 0, res.output
    assert "passthrough" in res.output and "exits/IO" in res.output
    assert (tmp_path / "passthru-demo-latency.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files


def test_run_writes_results_next_to_the_scenario(tmp_path):
    scen = tmp_path / "s.toml"
    shutil.copy(EXAMPLE, scen)
    res = CliRunner().invoke(cli, ["run", str(scen), "--json"])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout)
    saved = json.loads((tmp_path / "s.results.json").read_text())
    assert printed == saved
    assert {r["path"] for r in saved["results"]} >= {"bare-metal", "passthrough", "emulated"}
    assert all(r["verify_errors"] == 0 for r in saved["results"])
    out = tmp_path / "elsewhere.json"
    res = CliRunner().invoke(cli, ["run", str(scen), "--out", str(out)])
    assert res.exit_code == 0 and json.loads(out.read_text())["results"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.json", "s.results.json",
                                                          "s.toml"]


@pytest.mark.parametrize("body,field", [
    ('[[runs]]\npath = "passthrough"\ndevice = "floppy"\nios = 5\n', "runs[0].device"),
    ('[[runs]]\npath = "passthrough"\nqd = 2000\nios = 5\n', "runs[0].qd"),
    ('[[runs]]\npath = "passthrough"\nbs = 4000\nios = 5\n', "runs[0].bs"),
])
def test_run_bad_scenario_is_one_line_exit_2(tmp_path, body, field):
    scen = tmp_path / "bad.toml"
    scen.write_text(body)
    res = CliRunner().invoke(cli, ["run", str(scen)])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("passthru: error: ")
    assert field in lines[0] and "Traceback" not in res.output
    assert not (tmp_path / "bad.results.json").exists()
