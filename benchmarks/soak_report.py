"""The soak's summary as a table for BENCHMARKS.md, and its verdict (pure)."""

from __future__ import annotations

from typing import Any

# What counts as a failure of the soak (exit status 1), by summary["lost"] key.
FAILURES = (
    ("cross_tenant_frames", "frames delivered across tenants"),
    ("streams_broken", "TCP streams broken (reset, stalled, corrupted or short)"),
    ("ping_pairs_broken", "ping pairs silent longer than the stall bound"),
    ("agents_crashed", "agents that exited without being killed by the soak"),
    ("agents_leaking", "agents whose RSS grew beyond the bound"),
    ("stale_entries", "stale or missing state after the settle time"),
)


def verdict(summary: dict[str, Any]) -> list[str]:
    """The failures, one line per kind with a non-zero count (empty: the soak passed)."""
    lost = summary["lost"]
    return [f"{lost[key]} {what}" for key, what in FAILURES if lost.get(key)]


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def table(summary: dict[str, Any]) -> str:
    """Markdown: faults injected, load held, what was lost, agents' RSS."""
    faults = summary["faults"]
    load, lost = summary["load"], summary["lost"]
    lines = [
        f"Soak of {summary['duration_s']:.0f} s of faults (+ {summary['settle_s']:.0f} s settle), "
        f"seed {summary['seed']}, {summary['date']}, commit {summary['commit']}: "
        f"{summary['topology']}.",
        "",
        "| faults injected | count |",
        "|---|---:|",
        *(f"| {kind} | {n} |" for kind, n in faults.items()),
        f"| **total** | **{sum(faults.values())}** |",
        "",
        "| load held | |",
        "|---|---:|",
        f"| TCP streams (long-lived) | {load['streams']} |",
        f"| bytes carried by the streams | {load['stream_bytes']:,} |",
        f"| ping pairs (every pair of a tenant's VMs) | {load['ping_pairs']} |",
        f"| pings sent | {load['pings_sent']:,} |",
        f"| pings to and from spare VMs while up | {load['spare_pings_sent']:,} |",
        "",
        "| what was lost | |",
        "|---|---:|",
        f"| pings lost (of the pairs) | {lost['pings_lost']:,} "
        f"({_share(lost['pings_lost'], load['pings_sent'])}) |",
        f"| longest silence of a ping pair | {lost['longest_ping_gap_s']:.1f} s |",
        f"| ping pairs silent > bound (broken) | {lost['ping_pairs_broken']} |",
        f"| spare VMs' pings lost | {lost['spare_pings_lost']:,} |",
        f"| TCP streams broken | {lost['streams_broken']} of {load['streams']} |",
        f"| longest stall of a stream | {lost['longest_stall_s']:.1f} s |",
        f"| frames delivered across tenants | {lost['cross_tenant_frames']} |",
        f"| agents crashed | {lost['agents_crashed']} |",
        f"| agents leaking (RSS) | {lost['agents_leaking']} |",
        f"| stale or missing entries after settle | {lost['stale_entries']} |",
        "",
        *_relay_rows(summary),
        "| agent | processes | RSS start (MiB) | RSS end (MiB) |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {r['processes']} | {_mib(r['start_mib'])} | {_mib(r['end_mib'])} |"
            for name, r in summary["rss"].items()
        ),
    ]
    return "\n".join(lines) + "\n"


def _relay_rows(summary: dict[str, Any]) -> list[str]:
    """What the impairment relays did to the frames under each kind of link fault."""
    relays = summary.get("relays") or {}
    if not relays:
        return [f"Link faults: {summary.get('netem', '-')}.", ""]
    return [
        "| link fault (userspace relay) | faults | frames arriving under it | dropped | delayed | "
        "reordered |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {kind} | {r['faults']} | {r['offered']:,} | {r['dropped']:,} "
            f"| {r['delayed']:,} | {r['reordered']:,} |"
            for kind, r in relays.items()
        ),
        "",
    ]


def _share(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.2f}%" if whole else "-"
