"""Router marks on the bridge (docs/routing.md, "Declaring routers"): what is taken,
what is rejected whole, and why."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface

import pytest

from dove_ryu.adapters.ovsdb import parse_gateways, parse_routers
from dove_ryu.model import FloatingIp, Subnet

pytestmark = pytest.mark.unit


def _rejected_ids(rejected: tuple[tuple[str, str], ...]) -> set[str]:
    return {mark for mark, _ in rejected}


def test_a_router_with_its_subnets_snat_and_floating_ips() -> None:
    routers, rejected = parse_routers(
        {
            "dove-router-7": "5001=10.0.1.1/24, 5002=10.0.2.1/24",
            "dove-router-7-snat": "203.0.113.11",
            "dove-router-7-fips": "203.0.113.21=10.0.1.5",
            "other": "x",
        }
    )
    assert rejected == ()
    (router,) = routers
    assert router.router_id == 7
    assert router.subnets == (
        Subnet(5001, IPv4Interface("10.0.1.1/24")),
        Subnet(5002, IPv4Interface("10.0.2.1/24")),
    )
    assert router.snat == IPv4Address("203.0.113.11")
    fip = FloatingIp(IPv4Address("203.0.113.21"), IPv4Address("10.0.1.5"))
    assert router.floating_ips == (fip,)
    assert router.has_way_out


def test_two_tenants_may_share_subnets_and_gateway_addresses() -> None:
    routers, rejected = parse_routers(
        {
            "dove-router-1": "5001=10.0.0.254/24,5101=10.0.1.254/24",
            "dove-router-2": "5002=10.0.0.254/24,5102=10.0.1.254/24",
        }
    )
    assert rejected == ()
    assert [r.router_id for r in routers] == [1, 2]


@pytest.mark.parametrize(
    ("marks", "why"),
    [
        ({"dove-router-0": "5001=10.0.1.1/24"}, "not in 1..4095"),
        ({"dove-router-4096": "5001=10.0.1.1/24"}, "not in 1..4095"),
        ({"dove-router-3": "5001=10.0.1.1/24,5002=10.0.1.129/25"}, "overlap"),
        ({"dove-router-3": "5001=10.0.1.1/24,5001=10.0.2.1/24"}, "twice"),
        ({"dove-router-3": "5001=10.0.1.1"}, "<prefix>"),
        ({"dove-router-3": "0=10.0.1.1/24"}, "instance id"),
        ({"dove-router-3": "5001=10.0.1.0/24"}, "host address"),
        ({"dove-router-3": ""}, "no subnets"),
        ({"dove-router-3-snat": "203.0.113.1"}, "without"),
        ({"dove-router-3": "5001=10.0.1.1/24", "dove-router-3-snat": "nope"}, "-snat"),
        ({"dove-router-3": "5001=10.0.1.1/24", "dove-router-3-fips": "1.2.3.4=10.9.0.1"}, "none"),
        ({"dove-router-x": "5001=10.0.1.1/24"}, "dove-router-<id>"),
    ],
)
def test_a_bad_router_is_rejected_whole_with_why(marks: dict[str, str], why: str) -> None:
    routers, rejected = parse_routers(marks)
    assert routers == ()
    assert len(rejected) == 1 and why in rejected[0][1], rejected


def test_an_instance_on_two_routers_rejects_both_and_spares_the_others() -> None:
    routers, rejected = parse_routers(
        {
            "dove-router-1": "5001=10.0.0.1/24",
            "dove-router-2": "5001=10.0.9.1/24",
            "dove-router-3": "5003=10.0.0.1/24",
        }
    )
    assert [r.router_id for r in routers] == [3]
    assert _rejected_ids(rejected) == {"dove-router-1", "dove-router-2"}
    assert all("instance 5001" in why for _, why in rejected)


def test_external_addresses_must_differ_across_routers() -> None:
    routers, rejected = parse_routers(
        {
            "dove-router-1": "5001=10.0.0.1/24",
            "dove-router-1-snat": "203.0.113.1",
            "dove-router-2": "5002=10.0.0.1/24",
            "dove-router-2-fips": "203.0.113.1=10.0.0.5",
        }
    )
    assert routers == ()
    assert _rejected_ids(rejected) == {"dove-router-1", "dove-router-2"}


def test_gateways_in_order_of_preference() -> None:
    assert parse_gateways("10.99.0.202, 10.99.0.201") == (
        IPv4Address("10.99.0.202"),
        IPv4Address("10.99.0.201"),
    )
    assert parse_gateways("") == ()
    with pytest.raises(ValueError, match="dove-gateways"):
        parse_gateways("10.99.0.1,bad")
