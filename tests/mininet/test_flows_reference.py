"""The reference flow tables in flows/ hold on live Open vSwitch too: the two-site
emulation runs the fixed scenario (mininet_topos.flows_reference), its bridges are dumped
and normalised by the same function the fake switches' tables go through
(tests/unit/test_flows_reference.py makes flows/ from those), and compared exactly,
failing with a unified diff."""

from __future__ import annotations

import difflib
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mininet_topos.flows_reference import DEFAULT_OUT, LIVE_ONLY, regenerate  # noqa: E402

FAILURES = REPO / "results" / "failures" / "test_flows_reference"


def test_the_reference_flow_tables_are_up_to_date(tmp_path: Path) -> None:
    written = regenerate(tmp_path)
    kept = sorted(p.name for p in DEFAULT_OUT.glob("*.txt") if p.name not in LIVE_ONLY)
    assert sorted(p.name for p in written) == kept, "flows/ holds other tables than it makes"
    diffs = []
    for path in written:
        expected = (DEFAULT_OUT / path.name).read_text().splitlines(keepends=True)
        got = path.read_text().splitlines(keepends=True)
        diffs += difflib.unified_diff(expected, got, f"flows/{path.name}", f"now/{path.name}")
    if diffs:
        shutil.rmtree(FAILURES, ignore_errors=True)
        shutil.copytree(tmp_path, FAILURES)
        pytest.fail(
            f"live OVS disagrees with flows/ (its tables are in {FAILURES}); if the unit test "
            "tests/unit/test_flows_reference.py passes, the fake switch and OVS differ:\n"
            + "".join(diffs),
            pytrace=False,
        )
