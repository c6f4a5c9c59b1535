"""`passthru demo` and `passthru run`: JSON shape, files written, one-line errors."""

from __future__ import annotations

import json
import os
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
    assert {r["path"] for r in rows} == {"bare-metal", "passthrough", "emulated", "virtio-blk"}
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
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "s.results.json").stat().st_mode & 0o777 == 0o666 & ~umask  # not 0600
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
    ('[[runs]]\npath = "passthrough"\nqd = true\nios = 5\n', "runs[0].qd"),  # no coercion
    ('[[runs]]\npath = []\nios = 5\n', "runs[0].path"),
    ('[[runs]]\npath = "passthrough"\nios = 5\nruntime_us = 9\n', "ios or runtime_us"),
    ('[[runs]]\npath = "passthrough"\nios = 5\nnotify = "poll"\n', "runs[0].notify"),
    ('[[runs]]\npath = "virtio-blk"\nios = 5\nnotify = "irq"\n', "runs[0].notify"),
    ('[costs]\nvm_exit_ns = true\n[[runs]]\npath = "emulated"\nios = 5\n', "costs.vm_exit_ns"),
    ('[virtio_blk_costs]\nvq_pop = 1\n[[runs]]\npath = "virtio-blk"\nios = 5\n',
     "virtio_blk_costs.vq_pop"),
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


def _one_error_line(res) -> str:  # type: ignore[no-untyped-def]
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("passthru: error: "), res.output
    return lines[0]


def test_run_refuses_unreadable_scenarios_and_bad_outputs(tmp_path):
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe")
    assert "not a UTF-8" in _one_error_line(CliRunner().invoke(cli, ["run", str(binary)]))
    assert "Is a directory" in _one_error_line(CliRunner().invoke(cli, ["run", str(tmp_path)]))
    scen = tmp_path / "s.toml"
    scen.write_text('[[runs]]\npath = "passthrough"\nios = 5\n')
    before = scen.read_text()
    for out, words in ((tmp_path / "nodir" / "x.json", "does not exist"),
                       (scen, "overwrite the scenario"), (tmp_path, "directory")):
        line = _one_error_line(CliRunner().invoke(cli, ["run", str(scen), "--out", str(out)]))
        assert "--out" in line and words in line
    assert scen.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin.toml", "s.toml"]


def test_virtio_blk_options_reach_the_path(tmp_path):
    scen = tmp_path / "v.toml"
    runs = "".join(f'[[runs]]\npath = "virtio-blk"\nios = 40\nqd = 4\nnotify = "{n}"\n'
                   for n in ("userspace", "ioeventfd", "poll"))
    scen.write_text("[virtio_blk_costs]\npoll_max_ns = 100000\n" + runs)
    res = CliRunner().invoke(cli, ["run", str(scen), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["results"]
    exits = [r["exits_per_io"] for r in rows]
    # a userspace kick is one heavyweight exit per kick; a polling iothread needs almost none
    assert exits[0] > 0 and exits[2] < exits[1] <= exits[0], exits


def test_option_errors_are_one_line(tmp_path):
    line = _one_error_line(CliRunner().invoke(cli, ["groups", "--lspci", str(tmp_path)]))
    assert "--lspci" in line and "directory" in line
    assert "Missing argument" in _one_error_line(CliRunner().invoke(cli, ["run"]))
