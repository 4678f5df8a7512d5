"""A strict reader of the Prometheus text format (0.0.4) for the tests.

Strict on what the agent promises: every family declared by ``# HELP`` then ``# TYPE``
before its samples, each family's samples together, label values escaped, histogram
buckets cumulative and ending in ``+Inf`` equal to ``_count``; and prometheus_client's
own parser must read the same samples.  `Scrape.value` looks a sample up by name and
labels.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

KINDS = ("counter", "gauge", "histogram", "summary", "untyped")
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}

Labels = frozenset[tuple[str, str]]


class FormatError(AssertionError):
    pass


@dataclass
class Family:
    name: str
    kind: str
    help: str
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)


@dataclass
class Scrape:
    families: dict[str, Family]

    def value(self, name: str, default: float | None = None, **labels: str) -> float:
        """The sample ``name{labels}`` (exactly those labels), else ``default``."""
        key = (name, frozenset(labels.items()))
        for family in self.families.values():
            if key in family.samples:
                return family.samples[key]
        if default is None:
            raise KeyError(f"no sample {name}{labels}")
        return default

    def samples(self, name: str) -> dict[Labels, float]:
        """Every sample named ``name``, by its labels."""
        return {
            labels: v
            for family in self.families.values()
            for (n, labels), v in family.samples.items()
            if n == name
        }


def _labels(text: str, line: str) -> Labels:
    pairs: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if m is None:
            raise FormatError(f"bad labels in {line!r}")
        value = re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group(0)], m.group(2))
        pairs.append((m.group(1), value))
        pos = m.end()
    if len({k for k, _ in pairs}) != len(pairs):
        raise FormatError(f"a label twice in {line!r}")
    return frozenset(pairs)


def _belongs(sample: str, family: Family) -> bool:
    if family.kind == "histogram":
        return sample in (f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count")
    return sample == family.name


def parse(text: str) -> Scrape:
    if not text.endswith("\n"):
        raise FormatError("the text does not end with a newline")
    families: dict[str, Family] = {}
    current: Family | None = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            if name in families:
                raise FormatError(f"{name} declared twice")
            current = families[name] = Family(name, "", help_text)
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            if current is None or current.name != name or current.kind:
                raise FormatError(f"TYPE of {name} not right after its HELP")
            if kind not in KINDS:
                raise FormatError(f"{name}: unknown type {kind!r}")
            current.kind = kind
        elif line.startswith("#") or not line.strip():
            continue
        else:
            m = _SAMPLE.match(line)
            if m is None:
                raise FormatError(f"bad sample line {line!r}")
            name, labels, value = m.group(1), _labels(m.group(2) or "", line), m.group(3)
            if current is None or not current.kind or not _belongs(name, current):
                raise FormatError(f"sample {line!r} outside its family")
            if (name, labels) in current.samples:
                raise FormatError(f"sample {line!r} twice")
            current.samples[(name, labels)] = float(value)
    for family in families.values():
        if family.kind == "histogram":
            _check_histogram(family)
    ours = {key: v for family in families.values() for key, v in family.samples.items()}
    theirs = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    if ours != theirs:
        raise FormatError(f"prometheus_client reads other samples: {theirs} != {ours}")
    return Scrape(families)


def _check_histogram(family: Family) -> None:
    buckets: dict[Labels, list[tuple[float, float]]] = {}
    for (name, labels), value in family.samples.items():
        if name.endswith("_bucket"):
            le = dict(labels)["le"]
            rest = frozenset((k, v) for k, v in labels if k != "le")
            buckets.setdefault(rest, []).append((float(le), value))
    for rest, series in buckets.items():
        bounds = [b for b, _ in series]
        counts = [c for _, c in series]
        if bounds != sorted(bounds) or bounds[-1] != math.inf:
            raise FormatError(f"{family.name}: buckets out of order or no +Inf: {bounds}")
        if counts != sorted(counts):
            raise FormatError(f"{family.name}: buckets not cumulative: {counts}")
        count = family.samples.get((f"{family.name}_count", rest))
        if count != counts[-1]:
            raise FormatError(f"{family.name}: +Inf bucket {counts[-1]} != _count {count}")
