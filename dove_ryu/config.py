"""The agent's configuration: the ``[dove]`` section of its ini file.

Every setting is declared once in `DoveConfig` with its type and default;
`load` validates the file and raises `ConfigError` naming the bad setting, so
the launcher can stop with one clear line.
"""

from __future__ import annotations

import configparser
import ipaddress
import math
import os
import re
import socket
from dataclasses import dataclass, fields
from ipaddress import IPv4Address

SECTION = "dove"
TUNNEL_TYPES = ("vxlan",)
DATAPATH_TYPES = ("system", "netdev")
DISCOVERY_MODES = ("static",)
ROLES = ("host", "proxy")
OVERSIZE_ACTIONS = ("fragment", "icmp")


class ConfigError(Exception):
    """A missing or bad setting; the message names it."""


@dataclass(frozen=True)
class DoveConfig:
    underlay_ip: IPv4Address
    auth_key: bytes
    peers: tuple[IPv4Address, ...] = ()
    discovery: str = "static"
    bridge: str = "br-dove"
    datapath_type: str = "system"
    tunnel_type: str = "vxlan"
    tunnel_port: str = "dove-vxlan"
    control_port: int = 4799
    ovsdb: str = "unix:/var/run/openvswitch/db.sock"
    admin_socket: str = "/var/run/dove-ryu/admin.sock"
    host_name: str = ""
    announce_interval: float = 2.0
    learn_timeout: float = 0.3
    learn_retries: int = 3
    learn_idle_timeout: int = 300
    max_learned_per_instance: int = 1024
    max_pending_per_instance: int = 64
    departure_memory: float = 60.0  # how long a host answers for a VM that left it
    learn_rate_per_instance: float = 100.0
    packet_in_rate_limit: int = 500
    # VAN proxy role (paper section IV-C): a leg in the site underlay (underlay_ip)
    # and one in the inter-site network (wan_ip), towards the other sites' proxies.
    role: str = "host"
    site: str = ""
    wan_ip: IPv4Address | None = None
    wan_peers: tuple[IPv4Address, ...] = ()  # the other sites' proxies (their wan_ip)
    proxy_priority: int = 100  # of two proxies of a site, the higher one starts active
    proxy_hello_interval: float = 0.2  # hellos between a site's proxies
    wan_mtu: int = 1500  # IP MTU of the inter-site network
    wan_oversize: str = "fragment"  # frames too big for it: DOVE-layer fragments or ICMP
    # Prometheus metrics over HTTP (GET /metrics).  Off (0) unless the operator picks a
    # port (the emulation uses 9479): a new listener on every hypervisor is a deliberate
    # choice, and an upgrade changes nothing on a host.  Loopback unless opened up: the
    # metrics name the tenants' instances.
    metrics_port: int = 0
    metrics_host: IPv4Address = IPv4Address("127.0.0.1")

    @property
    def name(self) -> str:
        return self.host_name or str(self.underlay_ip)


_REQUIRED = ("underlay_ip", "auth_key")
_IDENT = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def _ip(setting: str, text: str) -> IPv4Address:
    try:
        return IPv4Address(text.strip())
    except ipaddress.AddressValueError:
        raise ConfigError(f"[dove] {setting}: {text.strip()!r} is not an IPv4 address") from None


# Upper bounds where a wire format or sanity sets one.
_MAXIMUM: dict[str, float] = {
    "control_port": 65535,
    "learn_idle_timeout": 65535,  # OpenFlow's idle_timeout is 16 bits
    "learn_retries": 20,
    "announce_interval": 3600,
    "learn_timeout": 60,
    "departure_memory": 3600,
    "max_learned_per_instance": 1_000_000,
    "max_pending_per_instance": 100_000,
    "proxy_priority": 255,
    "proxy_hello_interval": 60,
    "wan_mtu": 9000,
}
_MINIMUM: dict[str, float] = {"wan_mtu": 576}


def _positive(setting: str, text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"[dove] {setting}: {text!r} is not a {kind.__name__}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"[dove] {setting}: must be a finite number greater than 0, got {text!r}")
    if setting in _MAXIMUM and value > _MAXIMUM[setting]:
        raise ConfigError(f"[dove] {setting}: at most {_MAXIMUM[setting]:g}, got {text!r}")
    if setting in _MINIMUM and value < _MINIMUM[setting]:
        raise ConfigError(f"[dove] {setting}: at least {_MINIMUM[setting]:g}, got {text!r}")
    return value


def _port_or_off(setting: str, text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,5}", text) or int(text) > 65535:
        raise ConfigError(f"[dove] {setting}: {text!r} is not a port (1-65535, or 0 for off)")
    return int(text)


def _choice(setting: str, text: str, choices: tuple[str, ...]) -> str:
    if text not in choices:
        raise ConfigError(f"[dove] {setting}: {text!r} is not one of {', '.join(choices)}")
    return text


def parse_key(setting: str, text: str) -> bytes:
    text = text.strip()
    if not re.fullmatch(r"[0-9a-fA-F]{32,128}", text) or len(text) % 2:
        raise ConfigError(
            f"[dove] {setting}: the deployment key must be 32 to 128 hex digits (16-64 bytes)"
        )
    return bytes.fromhex(text)


def from_mapping(values: dict[str, str]) -> DoveConfig:
    """Validate raw ``[dove]`` settings into a `DoveConfig`."""
    known = {f.name for f in fields(DoveConfig)} | {"auth_key_file"}
    for key in values:
        if key not in known:
            raise ConfigError(f"[dove] {key}: unknown setting")
    if "auth_key_file" in values and "auth_key" not in values:
        path = values["auth_key_file"]
        try:
            with open(path, encoding="ascii") as key_file:
                values = {**values, "auth_key": key_file.read()}
        except OSError as e:
            raise ConfigError(f"[dove] auth_key_file: cannot read {path}: {e.strerror}") from None
    for key in _REQUIRED:
        if not values.get(key, "").strip():
            raise ConfigError(f"[dove] {key}: missing (required)")

    kwargs: dict[str, object] = {}
    for f in fields(DoveConfig):
        if f.name not in values:
            continue
        text = values[f.name].strip()
        if f.name in ("underlay_ip", "wan_ip", "metrics_host"):
            kwargs[f.name] = _ip(f.name, text)
        elif f.name == "auth_key":
            kwargs[f.name] = parse_key(f.name, text)
        elif f.name in ("peers", "wan_peers"):
            kwargs[f.name] = tuple(_ip(f.name, p) for p in re.split(r"[,\s]+", text) if p)
        elif f.name == "metrics_port":
            kwargs[f.name] = _port_or_off(f.name, text)
        elif f.name == "tunnel_type":
            kwargs[f.name] = _choice(f.name, text, TUNNEL_TYPES)
        elif f.name == "datapath_type":
            kwargs[f.name] = _choice(f.name, text, DATAPATH_TYPES)
        elif f.name == "discovery":
            kwargs[f.name] = _choice(f.name, text, DISCOVERY_MODES)
        elif f.name == "role":
            kwargs[f.name] = _choice(f.name, text, ROLES)
        elif f.name == "wan_oversize":
            kwargs[f.name] = _choice(f.name, text, OVERSIZE_ACTIONS)
        elif f.name == "site":
            if not _IDENT.match(text):
                raise ConfigError(f"[dove] site: {text!r} must be 1-15 letters, digits, _.-")
            kwargs[f.name] = text
        elif f.name in ("bridge", "tunnel_port"):
            if not _IDENT.match(text):
                raise ConfigError(f"[dove] {f.name}: {text!r} is not a valid interface name")
            kwargs[f.name] = text
        elif f.type in ("int", int):
            kwargs[f.name] = _positive(f.name, text, int)
        elif f.type in ("float", float):
            kwargs[f.name] = _positive(f.name, text, float)
        else:
            kwargs[f.name] = text
    underlay = kwargs["underlay_ip"]
    # A shared peers list may name this host too; it is not its own peer.
    kwargs["peers"] = tuple(p for p in kwargs.get("peers", ()) if p != underlay)  # type: ignore[attr-defined]
    kwargs.setdefault("host_name", socket.gethostname())
    _check_role(kwargs)
    return DoveConfig(**kwargs)  # type: ignore[arg-type]


def _check_role(kwargs: dict[str, object]) -> None:
    """A proxy needs its site and its inter-site leg; a host has neither."""
    proxy_only = ("site", "wan_ip", "wan_peers")
    if kwargs.get("role", "host") == "host":
        for name in proxy_only:
            if name in kwargs:
                raise ConfigError(f"[dove] {name}: only a proxy (role = proxy) has one")
        return
    for name in ("site", "wan_ip"):
        if name not in kwargs:
            raise ConfigError(f"[dove] {name}: missing (required with role = proxy)")
    wan_ip = kwargs["wan_ip"]
    if wan_ip == kwargs["underlay_ip"]:
        raise ConfigError("[dove] wan_ip: must differ from underlay_ip (two legs)")
    peers = kwargs.get("wan_peers", ())
    kwargs["wan_peers"] = tuple(p for p in peers if p != wan_ip)  # type: ignore[attr-defined]
    site_peers = set(kwargs.get("peers", ()))  # type: ignore[call-overload]
    clash = site_peers & set(kwargs["wan_peers"])  # type: ignore[call-overload]
    if clash:
        raise ConfigError(f"[dove] wan_peers: {min(clash)} is also a site peer")


def load(paths: list[str]) -> DoveConfig:
    """Read the ``[dove]`` section from the given ini files (later files win)."""
    if not paths:
        raise ConfigError("no --config-file given; the [dove] section is required")
    parser = configparser.ConfigParser(interpolation=None)
    for path in paths:
        if not os.path.exists(path):
            raise ConfigError(f"config file {path}: does not exist")
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as e:
            raise ConfigError(f"config file {path}: {e.message}") from None
    if not parser.has_section(SECTION):
        raise ConfigError(f"config file {', '.join(paths)}: no [dove] section")
    values = dict(parser.items(SECTION, raw=True))
    # configparser mixes [DEFAULT] into every section; those are os-ken's.
    for key in parser.defaults():
        if key not in parser._sections[SECTION]:  # type: ignore[attr-defined]
            values.pop(key, None)
    return from_mapping(values)
