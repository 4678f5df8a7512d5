"""Summaries of repeated measurements: median and spread, and ratios of medians."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def summary(values: Sequence[float | None]) -> dict[str, Any]:
    """Median, min, max, interquartile range and count of the values that exist."""
    got = sorted(v for v in values if v is not None)
    if not got:
        return {"n": 0, "median": None, "min": None, "max": None, "iqr": None}
    if len(got) >= 4:
        q = statistics.quantiles(got, n=4)
        iqr = q[2] - q[0]
    else:
        iqr = got[-1] - got[0]
    return {
        "n": len(got),
        "median": statistics.median(got),
        "min": got[0],
        "max": got[-1],
        "iqr": iqr,
    }


def ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """Ratio of two summaries' medians, None when either is missing or zero."""
    if not a.get("median") or not b.get("median"):
        return None
    return float(a["median"]) / float(b["median"])


def fmt(s: dict[str, Any], digits: int = 2) -> str:
    """'median (min-max)' for a report table."""
    if not s.get("n"):
        return "n/a"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"
