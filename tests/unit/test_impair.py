"""The impairment relay's scheduling (mininet_topos.impair.Direction, seeded, no I/O) and
tc netem arguments read as an Impairment (mininet_topos.relays)."""

from __future__ import annotations

import pytest

from mininet_topos.impair import Direction, Impairment
from mininet_topos.relays import impairment_from_netem

pytestmark = pytest.mark.unit

GAP = 0.001  # frames arrive 1 ms apart


def run(imp: Impairment, n: int = 5000, seed: int = 7) -> tuple[Direction, list[tuple[float, int]]]:
    """Offer frames 0..n-1 (payload = their number), GAP apart; (time out, number) each,
    the clock read every GAP."""
    d = Direction(seed)
    d.impairment = imp
    out: list[tuple[float, int]] = []
    for i in range(n):
        now = i * GAP
        out += [(now, int(f)) for f in d.due(now)]
        sent = d.offer(str(i).encode(), now)
        if sent is not None:
            out.append((now, int(sent)))
    now = n * GAP
    while d.next_due() is not None:  # the clock runs on, GAP at a time, until all are out
        out += [(now, int(f)) for f in d.due(now)]
        now += GAP
    return d, out


def test_no_impairment_passes_everything_at_once_in_order() -> None:
    d, out = run(Impairment(), 100)
    assert [i for _, i in out] == list(range(100))
    assert all(t == i * GAP for t, i in out)
    assert d.counts.offered == d.counts.forwarded == 100
    assert (d.counts.dropped, d.counts.delayed, d.counts.reordered) == (0, 0, 0)


def test_loss_drops_about_the_set_share_and_is_seeded() -> None:
    d, out = run(Impairment(loss=0.05))
    assert 0.04 * 5000 < d.counts.dropped < 0.06 * 5000
    assert d.counts.forwarded == len(out) == 5000 - d.counts.dropped
    assert [i for _, i in out] == sorted(i for _, i in out)  # loss alone keeps the order
    again, out2 = run(Impairment(loss=0.05))
    assert out2 == out and again.counts == d.counts
    other, _ = run(Impairment(loss=0.05), seed=8)
    assert other.counts.dropped != d.counts.dropped


def test_delay_with_jitter_delays_every_frame_and_keeps_the_order() -> None:
    d, out = run(Impairment(delay_ms=40, jitter_ms=10), 2000)
    arrived = {i: i * GAP for i in range(2000)}
    waits = [t - arrived[i] for t, i in out]
    assert min(waits) >= 0.030 - 1e-6
    # No frame waits less than delay - jitter or more than delay + jitter (+ the clock's
    # step); keeping the order pushes frames towards the top of the range at this rate.
    assert max(waits) <= 0.050 + GAP + 1e-6
    assert 0.040 <= sum(waits) / len(waits) <= 0.050
    assert [i for _, i in out] == list(range(2000))
    assert d.counts.delayed == 2000 and d.counts.reordered == 0


def test_reordering_lets_later_frames_overtake_the_held_ones() -> None:
    d, out = run(Impairment(delay_ms=10, reorder=0.25, reorder_ms=10))
    order = [i for _, i in out]
    assert sorted(order) == list(range(5000))  # nothing lost
    overtaken = sum(1 for k, i in enumerate(order) if i < max(order[:k], default=-1))
    assert overtaken == d.counts.reordered
    assert 0.20 * 5000 < d.counts.reordered < 0.30 * 5000


def test_clearing_the_impairment_stops_it() -> None:
    d = Direction(1)
    d.impairment = Impairment(loss=1.0)
    assert d.offer(b"x", 0.0) is None
    d.impairment = Impairment()
    assert d.offer(b"y", 0.1) == b"y"
    assert (d.counts.dropped, d.counts.forwarded) == (1, 1)


def test_bad_impairments_are_refused() -> None:
    with pytest.raises(ValueError):
        Impairment(loss=1.5)
    with pytest.raises(ValueError):
        Impairment(delay_ms=-1)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("loss", "5%"), Impairment(loss=0.05)),
        (("delay", "40ms", "12ms"), Impairment(delay_ms=40, jitter_ms=12)),
        (
            ("delay", "10ms", "reorder", "25%", "50%"),
            Impairment(delay_ms=10, reorder=0.25, reorder_ms=10),
        ),
    ],
)
def test_netem_arguments_as_an_impairment(args: tuple[str, ...], expected: Impairment) -> None:
    assert impairment_from_netem(args) == expected


def test_netem_arguments_not_understood_are_refused() -> None:
    with pytest.raises(ValueError):
        impairment_from_netem(("rate", "1mbit"))
