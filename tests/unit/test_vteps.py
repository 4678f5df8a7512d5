"""External VTEPs (docs/interop.md section 2): settings, flows, the host part."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from dove_ryu import config
from dove_ryu.config import ConfigError

pytestmark = pytest.mark.unit

KEY = "00112233445566778899aabbccddeeff"
BASE = {"underlay_ip": "10.0.0.1", "auth_key": KEY}


def _cfg(**settings: str) -> config.DoveConfig:
    return config.from_mapping({**BASE, **settings})


def test_vteps_and_macs_parse() -> None:
    cfg = _cfg(
        external_vteps="bm1=10.0.1.50:5000+5001, tor1=10.0.1.60:5000:geneve",
        external_macs="5000/02:00:00:00:05:01@bm1=10.0.0.51, 5001/02-00-00-00-05-02@bm1",
    )
    bm1, tor1 = cfg.vteps.declared
    assert (bm1.name, bm1.address, bm1.instances) == ("bm1", IPv4Address("10.0.1.50"), {5000, 5001})
    assert bm1.encapsulation == "vxlan" and tor1.encapsulation == "geneve"
    assert [(m.instance, m.mac, m.ip) for m in bm1.macs] == [
        (5000, "02:00:00:00:05:01", IPv4Address("10.0.0.51")),
        (5001, "02:00:00:00:05:02", None),
    ]
    assert tor1.macs == ()
    assert (cfg.vteps.external_mac_age, cfg.vteps.external_max_macs) == (300, 1024)


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"external_macs": "5000/02:00:00:00:05:01@bm9"}, "no VTEP named bm9"),
        ({"external_macs": "5002/02:00:00:00:05:01@bm1"}, "does not serve instance 5002"),
        ({"external_macs": "5000/01:00:00:00:05:01@bm1"}, "not a unicast MAC"),
        ({"external_macs": "5000/02:00:00:00:05:01@bm1,5000/02:00:00:00:05:01@bm1"}, "twice"),
        ({"external_vteps": "bm1=10.0.0.1:5000"}, "this host's underlay_ip"),
        ({"external_vteps": "a=1.2.3.4:5000,a=1.2.3.5:5000"}, "declared twice"),
        ({"external_vteps": "a=1.2.3.4:5000,b=1.2.3.4:5001"}, "same address"),
        ({"external_vteps": "a=1.2.3.4:0"}, "not in 1.."),
        ({"external_vteps": "a=1.2.3.4:16777215"}, "not in 1.."),
        ({"external_vteps": "a=1.2.3.4:5000:gre"}, "'gre' is not one of vxlan, geneve"),
        ({"external_vteps": "a=1.2.3.999:5000"}, "not an IPv4 address"),
        ({"external_vteps": "a=1.2.3.4"}, "is not NAME=IP:INSTANCE"),
        ({"external_vteps": "a=10.0.0.2:5000", "peers": "10.0.0.2"}, "a peer's address"),
    ],
)
def test_bad_entries_are_named_alone(settings: dict[str, str], says: str) -> None:
    settings = {"external_vteps": "bm1=10.0.1.50:5000+5001", **settings}
    other = "x=10.9.9.9:7,y=10.9.9.8:8"
    with pytest.raises(ConfigError, match=says) as e:
        _cfg(**{k: (f"{v},{other}" if k == "external_vteps" else v) for k, v in settings.items()})
    assert other not in str(e.value)  # one entry quoted, never the whole line
