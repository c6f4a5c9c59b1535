"""Mutated scenario files (lines dropped, duplicated, swapped, garbage inserted, values
replaced) either parse into runs or raise one ConfigError line naming the file: never
another exception, and never a run that the checks should have refused."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from text_mutations import mutated_lines

from passthru.errors import ConfigError
from passthru.scenarios.io_demo import parse_scenario

SCENARIO = (Path(__file__).resolve().parents[2] / "examples" / "nvme_scenario.toml").read_text()

VALUES = st.one_of(
    st.integers(min_value=-(1 << 66), max_value=1 << 66).map(str),
    st.integers(min_value=-2, max_value=5000).map(str),
    st.sampled_from(['"all"', '"passthrough"', '"virtio-blk"', '"floppy"', '"randrw"', '"rw"',
                     "true", "false", "1.5", "nan", "inf", "[]", '["emulated", "nope"]', "{}",
                     '"optane"', '"nand"', '"poll"', '"slow-nand"', "1979-05-27", '"\\u0000"']),
    st.text(max_size=10).map(lambda s: '"' + s.replace("\\", "").replace('"', "") + '"'),
)
GARBAGE = st.one_of(st.text(max_size=40), st.sampled_from([
    "[[runs]]", "[costs]", "[virtio_blk_costs]", "[devices.x]", 'preset = "optane"',
    'path = "emulated"', "qd = 1024", "ios = 1", "runtime_us = 5", "numjobs = 64",
    'notify = "poll"', "queue_size = 2", "bs = 513", "vm_exit_ns = -1"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_lines(SCENARIO, VALUES, GARBAGE))
def test_mutated_scenarios_parse_or_raise_one_config_error(text: str) -> None:
    try:
        specs = parse_scenario(text, "fuzz.toml")
    except ConfigError as exc:
        msg = str(exc)
        assert msg.startswith("fuzz.toml: ") and "\n" not in msg
        return
    for spec in specs:  # what parsed obeys the rules the checks enforce
        assert spec.job.iodepth <= spec.profile.max_queue_depth
        assert spec.job.bs % spec.profile.lba_size == 0
        assert (spec.job.ios is None) != (spec.job.runtime_ns is None)
        spec.path_config()  # builds without raising
