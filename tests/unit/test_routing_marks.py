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


def test_a_huge_router_id_is_a_rejected_mark_not_an_error() -> None:
    """int() refuses more than 4,300 digits: such a key must be refused like any bad one,
    or every OVSDB update (ports too) would fail while it exists."""
    key = "dove-router-" + "9" * 5000
    routers, rejected = parse_routers(
        {key: "5001=10.0.1.1/24", "dove-router-7": "5002=10.0.2.1/24"}
    )
    assert [r.router_id for r in routers] == [7]
    assert [k for k, _ in rejected] == [key]


@pytest.mark.parametrize("inside", ["10.0.1.1", "10.0.1.0", "10.0.1.255"])
def test_a_floating_ip_for_the_gateway_or_a_non_host_address_is_refused(inside: str) -> None:
    marks = {"dove-router-7": "5001=10.0.1.1/24", "dove-router-7-fips": f"203.0.113.5={inside}"}
    routers, rejected = parse_routers(marks)
    assert not routers and "not a host" in rejected[0][1]


def test_a_vm_port_or_an_endpoint_in_the_routers_mac_range_is_refused() -> None:
    from dove_ryu.adapters.ovsdb import parse_vm_port
    from dove_ryu.protocol import messages as msgs

    gateway_mac = "0a:d0:00:00:13:89"
    with pytest.raises(ValueError, match="routers' range"):
        parse_vm_port("tap0", 5, {"dove-instance": "5001", "attached-mac": gateway_mac})
    with pytest.raises(ValueError, match="routers' range"):
        msgs.LearnReply(5001, 1, gateway_mac, (), IPv4Address("10.99.0.2"), 1)
    with pytest.raises(ValueError, match="routers' range"):
        msgs.EndpointHere(5001, gateway_mac, (), IPv4Address("10.99.0.2"), 1)
    # A LEARN may still ask for it (a VM sending to another router's MAC is no error).
    assert msgs.LearnRequest(5001, 1, mac=gateway_mac).mac == gateway_mac
