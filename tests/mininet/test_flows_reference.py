"""The reference flow tables in flows/ are what the code makes today: regenerated into a
temporary directory (mininet_topos.flows_reference, the two-site emulation and its fixed
scenario) and compared exactly, failing with a unified diff."""

from __future__ import annotations

import difflib
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mininet_topos.flows_reference import DEFAULT_OUT, regenerate  # noqa: E402

pytestmark = [
    pytest.mark.mininet,
    pytest.mark.skipif(os.geteuid() != 0, reason="Mininet needs root"),
]

FAILURES = REPO / "results" / "failures" / "test_flows_reference"


def test_the_reference_flow_tables_are_up_to_date(tmp_path: Path) -> None:
    written = regenerate(tmp_path)
    kept = sorted(p.name for p in DEFAULT_OUT.glob("*.txt"))
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
            f"the flow tables changed (the new ones are in {FAILURES}); if that is intended, "
            "run `sudo scripts/regen-flows.sh` and commit flows/ with the change:\n"
            + "".join(diffs),
            pytrace=False,
        )
