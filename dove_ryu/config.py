"""The agent's configuration: the ``[dove]`` section of its ini file.

Every setting is declared once, with its type, default and help line, as a field
of one of `DoveConfig`'s small sections (host, learning, proxy, metrics); the field
keeps the setting's name, so ``cfg.learning.learn_timeout`` is ``learn_timeout``.
`parse` checks one setting's text and `from_values` checks them together, each
raising `ConfigError` naming the bad setting, so the agent stops with one clear line.
`dove_ryu.adapters.options` registers the same settings as oslo.config options;
`from_mapping` takes them as plain text.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from collections.abc import Collection, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from functools import cached_property
from ipaddress import IPv4Address
from typing import Any

from dove_ryu.model import (
    VTEP_ENCAPSULATIONS,
    ExternalVtep,
    VtepMac,
    check_instance,
    normalize_mac,
)
from dove_ryu.protocol.auth import MAX_KEY_ID, KeyRing

TUNNEL_TYPES = ("vxlan", "geneve")  # in the order a common one is chosen (docs/interop.md)
DATAPATH_TYPES = ("system", "netdev", "dummy")  # dummy: ovs-vswitchd --enable-dummy (tests)
DISCOVERY_MODES = ("static", "directory")
ROLES = ("host", "proxy", "gateway", "vtep-controller")
OVERSIZE_ACTIONS = ("fragment", "icmp")


class ConfigError(ValueError):
    """A missing or bad setting; the message names it.  A ValueError, as oslo.config
    expects of an option's type."""


def _setting(default: object, doc: str) -> Any:
    """A setting's default and the one line an operator reads about it."""
    return field(default=default, metadata={"help": doc})


@dataclass(frozen=True)
class HostConfig:
    """This hypervisor: its underlay leg, the deployment key, its peers, its local OVS."""

    underlay_ip: IPv4Address = field(metadata={"help": "this host's address in the underlay"})
    auth_key: bytes | None = _setting(None, "the deployment key (key 0), 32 to 128 hex digits")
    auth_keys: tuple[tuple[int, bytes], ...] = _setting(
        (), "deployment keys by id (0-255): ID:HEX, comma-separated"
    )
    auth_key_id: int = _setting(0, "the id of the key this agent signs with")
    peers: tuple[IPv4Address, ...] = _setting((), "the other hosts (and proxies) of the site")
    discovery: str = _setting("static", "how peers are found: static (peers) or directory")
    directory: tuple[str, ...] = _setting(
        (), "the directory cluster's OVSDB remotes (tcp:IP:PORT, ssl:IP:PORT, unix:/PATH)"
    )
    directory_private_key: str = _setting("", "this host's key for ssl: directory remotes")
    directory_certificate: str = _setting("", "its certificate (CN: its host_name)")
    directory_ca_cert: str = _setting("", "the CA that signed the directory members'")
    directory_heartbeat_interval: float = _setting(
        0.0, "seconds between heartbeats in the directory (default: announce_interval)"
    )
    bridge: str = _setting("br-dove", "the integration bridge")
    datapath_type: str = _setting("system", "the bridge's datapath type")
    tunnel_type: str = _setting("vxlan", "the encapsulation sent to DOVE peers that accept it")
    tunnel_port: str = _setting("dove-vxlan", "the tunnel port's name (geneve: dove-geneve)")
    accept_tunnel_types: tuple[str, ...] = _setting(
        (), "the encapsulations received, comma-separated (default: tunnel_type alone)"
    )
    control_port: int = _setting(4799, "UDP port of the control protocol")
    ovsdb: str = _setting("unix:/var/run/openvswitch/db.sock", "OVSDB connection")
    admin_socket: str = _setting("/var/run/dove-ryu/admin.sock", "dovectl's unix socket")
    host_name: str = _setting("", "the name in logs and status (default: the hostname)")

    def __post_init__(self) -> None:
        self.keyring  # noqa: B018 - checked now: a bad key set never starts an agent
        _check_tunnels(self)

    @property
    def tunnel_ports(self) -> dict[str, str]:
        """The name of each accepted encapsulation's port (`tunnel_port`: tunnel_type's)."""
        return {
            t: self.tunnel_port if t == self.tunnel_type else f"dove-{t}"
            for t in self.accept_tunnel_types
        }

    @cached_property
    def keyring(self) -> KeyRing:
        """Every key this agent accepts (auth_key is key 0) and the one it signs with."""
        keys = list(self.auth_keys)
        if self.auth_key is not None:
            if any(key_id == 0 for key_id, _ in keys):
                raise ConfigError("[dove] auth_keys: key id 0 is auth_key's; give it once")
            keys.append((0, self.auth_key))
        if not keys:
            raise ConfigError("[dove] auth_key: missing (required, or auth_keys)")
        ids = sorted(key_id for key_id, _ in keys)
        if self.auth_key_id not in ids:
            held = ", ".join(map(str, ids))
            raise ConfigError(
                f"[dove] auth_key_id: key {self.auth_key_id} is not among the keys ({held})"
            )
        try:
            return KeyRing.of(keys, self.auth_key_id)
        except ValueError as e:
            raise ConfigError(f"[dove] auth_keys: {e}") from None


def _check_tunnels(host: HostConfig) -> None:
    """Fill in the defaults that follow tunnel_type and check the tunnel settings."""
    if host.tunnel_type not in TUNNEL_TYPES:
        raise ConfigError(f"[dove] tunnel_type: {host.tunnel_type!r} is not one of vxlan, geneve")
    if host.tunnel_type == "geneve" and host.tunnel_port == "dove-vxlan":
        # The default name follows the type (an old config that names no port keeps working).
        object.__setattr__(host, "tunnel_port", "dove-geneve")
    accept = host.accept_tunnel_types or (host.tunnel_type,)
    if host.tunnel_type not in accept:
        raise ConfigError(
            f"[dove] accept_tunnel_types: must include tunnel_type ({host.tunnel_type})"
        )
    # Kept in TUNNEL_TYPES' order: the order a common encapsulation is chosen in.
    object.__setattr__(host, "accept_tunnel_types", tuple(t for t in TUNNEL_TYPES if t in accept))
    names = list(host.tunnel_ports.values())
    if len(set(names)) != len(names):
        raise ConfigError(f"[dove] tunnel_port: {host.tunnel_port} is another encapsulation's port")


@dataclass(frozen=True)
class LearningConfig:
    """Announcements and the LEARN protocol: timers, retries and per-instance limits."""

    announce_interval: float = _setting(2.0, "seconds between announcements")
    learn_timeout: float = _setting(0.3, "seconds before a LEARN is retried")
    learn_retries: int = _setting(3, "retries of an unanswered LEARN")
    learn_idle_timeout: int = _setting(300, "idle timeout (s) of a learned endpoint's flows")
    max_learned_per_instance: int = _setting(1024, "learned endpoints kept per instance")
    max_pending_per_instance: int = _setting(64, "LEARNs in flight per instance")
    # How long a host answers for a VM that left it.
    departure_memory: float = _setting(60.0, "seconds a host answers for a VM that left")
    learn_rate_per_instance: float = _setting(100.0, "LEARNs per second per instance")
    packet_in_rate_limit: int = _setting(500, "packet-ins per second the switch sends")


@dataclass(frozen=True)
class ProxyConfig:
    """The VAN proxy role (paper section IV-C): a leg in the site underlay (underlay_ip)
    and one in the inter-site network (wan_ip), towards the other sites' proxies."""

    site: str = _setting("", "the proxy's site (role = proxy)")
    wan_ip: IPv4Address | None = _setting(None, "the proxy's inter-site address")
    wan_peers: tuple[IPv4Address, ...] = _setting((), "the other sites' proxies (their wan_ip)")
    proxy_priority: int = _setting(100, "of two proxies of a site, the higher starts active")
    proxy_hello_interval: float = _setting(0.2, "seconds between hellos of a site's proxies")
    ha_agent_grace: float = _setting(
        15.0,
        "seconds a silent proxy or gateway keeps its role while BFD says its datapath forwards",
    )
    wan_mtu: int = _setting(1500, "IP MTU of the inter-site network")
    wan_oversize: str = _setting("fragment", "frames too big for it: fragment or icmp")


@dataclass(frozen=True)
class GatewayConfig:
    """The external gateway role (docs/routing.md): a leg in the underlay (underlay_ip)
    and an OVS port on the bridge in the external network, where tenant routers' source
    NAT and floating IPs live.  Two gateways run active/standby."""

    external_port: str = _setting("", "the bridge's port in the external network")
    external_ip: IPv4Address | None = _setting(None, "the gateway's own external address")
    external_prefix: int = _setting(24, "the external subnet's prefix length")
    external_nexthop: IPv4Address | None = _setting(
        None, "the external router: where what is off the external subnet goes"
    )
    gateway_priority: int = _setting(100, "of two gateways, the higher starts active")
    gateway_hello_interval: float = _setting(0.2, "seconds between the gateways' hellos")


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics over HTTP (GET /metrics).  Off (0) unless the operator picks a
    port (the emulation uses 9479): a new listener on every hypervisor is a deliberate
    choice, and an upgrade changes nothing on a host.  Loopback unless opened up: the
    metrics name the tenants' instances."""

    metrics_port: int = _setting(0, "HTTP port of /metrics (0: off)")
    metrics_host: IPv4Address = _setting(IPv4Address("127.0.0.1"), "address of /metrics")


@dataclass(frozen=True)
class DhcpConfig:
    """DHCP answered on the host (docs/routing.md): what a VM port with an address is
    told besides its address, prefix and router."""

    dhcp_dns: tuple[IPv4Address, ...] = _setting((), "DNS servers told to VMs by DHCP")
    dhcp_mtu: int = _setting(
        1450, "interface MTU told to VMs by DHCP under VXLAN (Geneve: 8 bytes less)"
    )
    dhcp_lease_time: int = _setting(86400, "DHCP lease time (s) told to VMs")


@dataclass(frozen=True, order=True)
class VtepBinding:
    """One ``vtep_bindings`` entry: a switch port's VLAN (0: untagged) bound to an instance."""

    port: str
    vlan: int
    instance: int

    def __str__(self) -> str:
        return f"{self.port}:{self.vlan}={self.instance}"


@dataclass(frozen=True)
class VtepControllerConfig:
    """The VTEP controller (role = vtep-controller, docs/interop.md section 3): the switch
    it drives through its hardware_vtep OVSDB, and which of its ports' VLANs are bound to
    which instances."""

    vtep_ovsdb: str = _setting("", "the switch's hardware_vtep OVSDB (tcp:IP:PORT, unix:PATH)")
    vtep_switch: str = _setting("", "its Physical_Switch name")
    vtep_bindings: tuple[VtepBinding, ...] = _setting(
        (), "PORT:VLAN=INSTANCE, comma-separated (VLAN 0: untagged)"
    )


@dataclass(frozen=True)
class ExternalVtepsConfig:
    """External VTEPs (docs/interop.md section 2): VTEPs that run no agent, the
    instances they serve and the MACs declared behind them."""

    external_vteps: tuple[ExternalVtep, ...] = _setting(
        (), "VTEPs running no agent: NAME=IP:INSTANCE[+INSTANCE...][:ENCAP], comma-separated"
    )
    external_macs: tuple[VtepMac, ...] = _setting(
        (), "MACs behind them: INSTANCE/MAC@NAME[=IPv4], comma-separated"
    )
    external_mac_age: int = _setting(300, "idle timeout (s) of a MAC learned behind a VTEP")
    external_max_macs: int = _setting(1024, "MACs learned per external VTEP and instance")

    @cached_property
    def declared(self) -> tuple[ExternalVtep, ...]:
        """The VTEPs, each with the MACs declared behind it."""
        return tuple(
            replace(v, macs=tuple(m for m in self.external_macs if m.vtep == v.name))
            for v in self.external_vteps
        )


@dataclass(frozen=True)
class DoveConfig:
    host: HostConfig
    role: str = "host"
    learning: LearningConfig = field(default_factory=LearningConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    dhcp: DhcpConfig = field(default_factory=DhcpConfig)
    vtep: VtepControllerConfig = field(default_factory=VtepControllerConfig)
    vteps: ExternalVtepsConfig = field(default_factory=ExternalVtepsConfig)

    @property
    def name(self) -> str:
        return self.host.host_name or str(self.host.underlay_ip)

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between this agent's heartbeats in the directory (directory mode): a
        host is judged dead after 3.5 of them."""
        return self.host.directory_heartbeat_interval or self.learning.announce_interval


SECTIONS: dict[str, type] = {
    "host": HostConfig,
    "learning": LearningConfig,
    "proxy": ProxyConfig,
    "gateway": GatewayConfig,
    "metrics": MetricsConfig,
    "dhcp": DhcpConfig,
    "vtep": VtepControllerConfig,
    "vteps": ExternalVtepsConfig,
}


@dataclass(frozen=True)
class Setting:
    """One ``[dove]`` setting: its name, the section holding it, its type (as annotated)
    and default (None: none), and its help line."""

    name: str
    section: str  # "" for DoveConfig's own (role)
    type: str
    default: object
    help: str


def _settings() -> tuple[Setting, ...]:
    found = []
    for section, cls in SECTIONS.items():
        if section == "proxy":
            found.append(
                Setting(
                    "role",
                    "",
                    "str",
                    "host",
                    "host, proxy (a site's VAN proxy), gateway (to the external network) "
                    "or vtep-controller (drives a hardware_vtep switch)",
                )
            )
        for f in fields(cls):
            default = None if f.default is MISSING else f.default
            found.append(Setting(f.name, section, str(f.type), default, f.metadata["help"]))
            if f.name == "auth_key":
                found.append(Setting("auth_key_file", "", "str", None, "a file holding auth_key"))
            if f.name == "auth_keys":
                found.append(
                    Setting("auth_keys_file", "", "str", None, "a file of keys, ID:HEX per line")
                )
    return tuple(found)


# In the order settings are checked: host, learning, role, then what a proxy adds, metrics,
# DHCP.
SETTINGS = _settings()
BY_NAME = {s.name: s for s in SETTINGS}

_REQUIRED = ("underlay_ip", "auth_key")
# The settings that make the key ring: re-read when the agent reloads its keys.
KEY_SETTINGS = ("auth_key", "auth_key_file", "auth_keys", "auth_keys_file", "auth_key_id")
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
    "directory_heartbeat_interval": 3600,
    "learn_timeout": 60,
    "departure_memory": 3600,
    "max_learned_per_instance": 1_000_000,
    "max_pending_per_instance": 100_000,
    "proxy_priority": 255,
    "proxy_hello_interval": 60,
    "ha_agent_grace": 3600,
    "wan_mtu": 9000,
    "dhcp_mtu": 9000,
    "dhcp_lease_time": 0xFFFFFFFE,  # 32 bits, and all ones means "infinite" (RFC 2132)
    "external_prefix": 32,
    "gateway_priority": 255,
    "gateway_hello_interval": 60,
    "external_mac_age": 65535,  # the learned flows' idle_timeout: 16 bits
    "external_max_macs": 1_000_000,
}
# An interface MTU below 68 is refused by RFC 2132 9.1; a lease shorter than a minute
# would have VMs renew all the time.
_MINIMUM: dict[str, float] = {"wan_mtu": 576, "dhcp_mtu": 68, "dhcp_lease_time": 60}


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


def _remote(setting: str, text: str) -> str:
    """An OVSDB remote of the directory: tcp:IP:PORT, ssl:IP:PORT, or unix:PATH (a
    directory member on the same machine)."""
    method, _, rest = text.partition(":")
    if method == "unix" and rest.startswith("/"):
        return text
    address, _, port = rest.rpartition(":")
    if method not in ("tcp", "ssl") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"[dove] {setting}: {text!r} is not tcp:IP:PORT, ssl:IP:PORT or unix:/PATH"
        )
    _ip(setting, address)
    return text


_BINDING = re.compile(r"^([A-Za-z0-9_.:/-]{1,64}?):(\d{1,4})=(\d{1,8})$")


def _vtep_bindings(setting: str, text: str) -> tuple[VtepBinding, ...]:
    """``PORT:VLAN=INSTANCE`` entries; a port's VLAN is bound once."""
    found: dict[tuple[str, int], VtepBinding] = {}
    for entry in (e for e in re.split(r"[,\s]+", text) if e):
        m = _BINDING.match(entry)
        if not m:
            raise ConfigError(f"[dove] {setting}: {entry!r} is not PORT:VLAN=INSTANCE")
        port, vlan = m.group(1), int(m.group(2))
        if vlan > 4095:
            raise ConfigError(f"[dove] {setting}: {entry!r}: VLAN must be 0-4095")
        instance = _instance(setting, entry, m.group(3))  # 16777215 is BFD's
        if (port, vlan) in found:
            raise ConfigError(f"[dove] {setting}: {port}:{vlan} is bound twice")
        found[(port, vlan)] = VtepBinding(port, vlan, instance)
    return tuple(sorted(found.values()))


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


def parse_keys(setting: str, text: str, sep: str = r"[,\s]+") -> tuple[tuple[int, bytes], ...]:
    """``ID:HEX`` entries: each key with its id (0-255), no id twice."""
    found: dict[int, bytes] = {}
    for entry in re.split(sep, text.strip()):
        if not entry.strip():
            continue
        if ":" not in entry:
            raise ConfigError(f"[dove] {setting}: an entry is not ID:HEX (a key id 0-255, a key)")
        key_id = _key_id(setting, entry.partition(":")[0])
        if key_id in found:
            raise ConfigError(f"[dove] {setting}: key id {key_id} is given twice")
        found[key_id] = parse_key(setting, entry.partition(":")[2])
    return tuple(sorted(found.items()))


def _key_id(setting: str, text: str) -> int:
    text = text.strip()
    # NOTE: never echo an entry that may hold a key; the id alone is safe to show.
    if not re.fullmatch(r"[0-9]{1,3}", text) or int(text) > MAX_KEY_ID:
        shown = repr(text) if len(text) <= 4 else "an entry"
        raise ConfigError(f"[dove] {setting}: {shown} is not a key id (0-{MAX_KEY_ID})")
    return int(text)


def parse(name: str, text: str) -> object:
    """Check one setting's text: its value, or `ConfigError` naming it."""
    text = text.strip()
    kind = BY_NAME[name].type
    if name in _REQUIRED and not text:
        raise ConfigError(f"[dove] {name}: missing (required)")
    if name in ("underlay_ip", "wan_ip", "metrics_host", "external_ip", "external_nexthop"):
        return _ip(name, text)
    if name == "auth_key":
        return parse_key(name, text)
    if name == "auth_keys":
        return parse_keys(name, text)
    if name == "auth_key_id":
        return _key_id(name, text)
    if name in ("peers", "wan_peers", "dhcp_dns"):
        return tuple(_ip(name, p) for p in re.split(r"[,\s]+", text) if p)
    if name == "directory":
        return tuple(_remote(name, r) for r in re.split(r"[,\s]+", text) if r)
    if name == "vtep_ovsdb":
        return _remote(name, text)
    if name == "vtep_bindings":
        return _vtep_bindings(name, text)
    if name == "metrics_port":
        return _port_or_off(name, text)
    if name == "external_vteps":
        return _vteps(text)
    if name == "external_macs":
        return tuple(_vtep_mac(e) for e in re.split(r"[,\s]+", text) if e)
    if name in _CHOICES:
        return _choice(name, text, _CHOICES[name])
    if name == "accept_tunnel_types":
        given = [t for t in re.split(r"[,\s]+", text) if t]
        if not given:
            raise ConfigError("[dove] accept_tunnel_types: empty (give vxlan, geneve or both)")
        return tuple(_choice(name, t, TUNNEL_TYPES) for t in given)
    if name == "site":
        if not _IDENT.match(text):
            raise ConfigError(f"[dove] site: {text!r} must be 1-15 letters, digits, _.-")
        return text
    if name in ("bridge", "tunnel_port", "external_port"):
        if not _IDENT.match(text):
            raise ConfigError(f"[dove] {name}: {text!r} is not a valid interface name")
        return text
    if kind == "int":
        return _positive(name, text, int)
    if kind == "float":
        return _positive(name, text, float)
    return text


_CHOICES = {
    "tunnel_type": TUNNEL_TYPES,
    "datapath_type": DATAPATH_TYPES,
    "discovery": DISCOVERY_MODES,
    "role": ROLES,
    "wan_oversize": OVERSIZE_ACTIONS,
}


def _check_required(given: Collection[str], role: object = "host") -> None:
    others = ("auth_key_file", "auth_keys", "auth_keys_file")
    for key in _REQUIRED:
        if key == "underlay_ip" and role == "vtep-controller":
            continue  # the switch's tunnel IP (Physical_Switch.tunnel_ips)
        if key not in given and not (key == "auth_key" and any(o in given for o in others)):
            raise ConfigError(f"[dove] {key}: missing (required)")


def from_mapping(values: dict[str, str]) -> DoveConfig:
    """Validate raw ``[dove]`` settings (the text of each) into a `DoveConfig`."""
    for key in values:
        if key not in BY_NAME:
            raise ConfigError(f"[dove] {key}: unknown setting")
    role = parse("role", values["role"]) if "role" in values else "host"
    _check_required(values, role)
    return from_values(
        {s.name: parse(s.name, values[s.name]) for s in SETTINGS if s.name in values}
    )


def from_values(values: Mapping[str, object]) -> DoveConfig:
    """Check the settings together and assemble a `DoveConfig`.

    `values` holds the settings given, each already checked by `parse`; the others
    take their defaults.  `auth_key_file` stands in for `auth_key` when that is not given.
    """
    kwargs = dict(values)
    _read_key_files(kwargs)
    _check_required(kwargs, kwargs.get("role", "host"))
    _check_vtep(kwargs)
    underlay = kwargs["underlay_ip"]
    # A shared peers list may name this host too; it is not its own peer.
    kwargs["peers"] = tuple(p for p in kwargs.get("peers", ()) if p != underlay)  # type: ignore[attr-defined]
    kwargs.setdefault("host_name", socket.gethostname())
    _check_role(kwargs)
    _check_discovery(kwargs)
    _check_vteps(kwargs)
    sections = {
        section: cls(**{f.name: kwargs[f.name] for f in fields(cls) if f.name in kwargs})
        for section, cls in SECTIONS.items()
    }
    return DoveConfig(role=str(kwargs.get("role", "host")), **sections)


def _read_key_files(kwargs: dict[str, object]) -> None:
    """``auth_key_file`` stands in for ``auth_key`` when that is not given; the keys of
    ``auth_keys_file`` (one ID:HEX a line, # comments) join ``auth_keys``."""
    path = kwargs.pop("auth_key_file", None)
    if path is not None and "auth_key" not in kwargs:
        kwargs["auth_key"] = parse("auth_key", _read("auth_key_file", str(path)))
    path = kwargs.pop("auth_keys_file", None)
    if path is not None:
        lines = [line.partition("#")[0] for line in _read("auth_keys_file", str(path)).splitlines()]
        from_file = parse_keys(f"auth_keys_file {path}", "\n".join(lines), sep=r"\n")
        given = dict(kwargs.get("auth_keys", ()))  # type: ignore[call-overload]
        for key_id, key in from_file:
            if key_id in given:
                raise ConfigError(f"[dove] auth_keys_file: key id {key_id} is in auth_keys too")
            given[key_id] = key
        kwargs["auth_keys"] = tuple(sorted(given.items()))


def _read(setting: str, path: str) -> str:
    try:
        with open(path, encoding="ascii") as key_file:
            return key_file.read()
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or "not ASCII text"
        raise ConfigError(f"[dove] {setting}: cannot read {path}: {why}") from None


def keyring_from_mapping(values: Mapping[str, str]) -> KeyRing:
    """The key ring of the key settings' text (`KEY_SETTINGS`), as a reload reads them
    again from the configuration files; raises `ConfigError` naming a bad one."""
    parsed: dict[str, object] = {
        name: parse(name, text) for name, text in values.items() if name in KEY_SETTINGS
    }
    _read_key_files(parsed)
    _check_required({"underlay_ip", *parsed})
    host = HostConfig(IPv4Address(0), **parsed)  # type: ignore[arg-type]
    return host.keyring


def _check_discovery(kwargs: dict[str, object]) -> None:
    """The directory mode needs the directory's remotes; the static mode has none.

    A proxy may use either: in directory mode its site's hosts (and its partner
    proxies) come from its site's directory, the other sites' proxies from
    ``wan_peers`` as in static mode."""
    directory = kwargs.get("discovery", "static") == "directory"
    if directory and not kwargs.get("directory"):
        raise ConfigError("[dove] directory: missing (required with discovery = directory)")
    for name in ("directory", "directory_heartbeat_interval"):
        if not directory and name in kwargs:
            raise ConfigError(f"[dove] {name}: only with discovery = directory")
    ssl_files = ("directory_private_key", "directory_certificate", "directory_ca_cert")
    if any(str(r).startswith("ssl:") for r in kwargs.get("directory", ())):  # type: ignore[attr-defined]
        for name in ssl_files:
            if not kwargs.get(name):
                raise ConfigError(f"[dove] {name}: missing (required with ssl: directory remotes)")


_GATEWAY_ONLY = tuple(f.name for f in fields(GatewayConfig))
_VTEP_ONLY = tuple(f.name for f in fields(VtepControllerConfig))
UNSET_IP = IPv4Address(0)  # a VTEP controller's underlay_ip when not given: the switch's


def _check_vtep(kwargs: dict[str, object]) -> None:
    """A VTEP controller names its switch, its database and its bindings, and finds
    endpoints in the directory; no other role has these settings."""
    if kwargs.get("role", "host") != "vtep-controller":
        for name in _VTEP_ONLY:
            if name in kwargs:
                raise ConfigError(f"[dove] {name}: only a VTEP controller (role = vtep-controller)")
        return
    for name in _VTEP_ONLY:
        if not kwargs.get(name):
            raise ConfigError(f"[dove] {name}: missing (required with role = vtep-controller)")
    if kwargs.get("discovery", "static") != "directory":
        raise ConfigError(
            "[dove] discovery: a VTEP controller needs discovery = directory "
            "(it finds every endpoint of its instances there)"
        )
    for name in ("site", "wan_ip", "wan_peers", "peers", *_GATEWAY_ONLY):
        if name in kwargs:
            raise ConfigError(f"[dove] {name}: not a VTEP controller's setting")
    if kwargs.get("tunnel_type", "vxlan") != "vxlan":
        raise ConfigError(
            "[dove] tunnel_type: a hardware_vtep switch speaks VXLAN only (vxlan_over_ipv4)"
        )
    kwargs.setdefault("underlay_ip", UNSET_IP)
    kwargs.setdefault("host_name", kwargs["vtep_switch"])  # its directory row's name


def _check_role(kwargs: dict[str, object]) -> None:
    """A proxy needs its site and its inter-site leg, a gateway its external leg; a
    host has neither."""
    proxy_only = ("site", "wan_ip", "wan_peers")
    role = kwargs.get("role", "host")
    accept = set(kwargs.get("accept_tunnel_types", ()))  # type: ignore[call-overload]
    if role != "host" and accept - {kwargs.get("tunnel_type", "vxlan")}:
        # A proxy relays out of the port a packet came in by; a gateway is not built for
        # two either: both speak one encapsulation (docs/interop.md).
        raise ConfigError(f"[dove] accept_tunnel_types: a {role} accepts its tunnel_type only")
    if role != "gateway":
        for name in _GATEWAY_ONLY:
            if name in kwargs:
                raise ConfigError(f"[dove] {name}: only a gateway (role = gateway) has one")
    if role == "vtep-controller":
        return  # _check_vtep
    if role in ("host", "gateway"):
        for name in proxy_only:
            if name in kwargs:
                raise ConfigError(f"[dove] {name}: only a proxy (role = proxy) has one")
        if role == "gateway":
            if kwargs.get("discovery") == "directory":
                # Not built yet: the gateway would register and learn no member, and drop
                # everything; say so rather than start it.
                raise ConfigError(
                    "[dove] discovery: a gateway finds hosts by static peers only "
                    "(discovery = directory is not supported with role = gateway yet)"
                )
            _check_gateway(kwargs)
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


def _check_gateway(kwargs: dict[str, object]) -> None:
    """A gateway's external leg: its port, its address, and a next hop on its subnet."""
    for name in ("external_port", "external_ip", "external_nexthop"):
        if name not in kwargs:
            raise ConfigError(f"[dove] {name}: missing (required with role = gateway)")
    ip, nexthop = kwargs["external_ip"], kwargs["external_nexthop"]
    prefix = kwargs.get("external_prefix", 24)
    network = ipaddress.IPv4Interface(f"{ip}/{prefix}").network
    if ip == kwargs["underlay_ip"]:
        raise ConfigError("[dove] external_ip: must differ from underlay_ip (two legs)")
    if nexthop == ip or nexthop not in network:
        raise ConfigError(
            f"[dove] external_nexthop: {nexthop} must be another address of {network}"
        )


# --- external VTEPs ------------------------------------------------------------------
_VTEP = re.compile(r"^([A-Za-z0-9_.-]{1,15})=([0-9.]+):([0-9+]+)(?::([a-z]+))?$")
_VTEP_MAC = re.compile(r"^([0-9]+)/([0-9A-Fa-f:-]+)@([A-Za-z0-9_.-]{1,15})(?:=([0-9.]+))?$")


def _instance(setting: str, entry: str, text: str) -> int:
    try:
        return check_instance(int(text))
    except ValueError as e:
        raise ConfigError(f"[dove] {setting}: {entry!r}: {e}") from None


def _vteps(text: str) -> tuple[ExternalVtep, ...]:
    """external_vteps: NAME=IP:INSTANCE[+INSTANCE...][:ENCAP], each entry checked alone
    (an error quotes the entry, never the whole line)."""
    found: list[ExternalVtep] = []
    for entry in (e for e in re.split(r"[,\s]+", text) if e):
        m = _VTEP.match(entry)
        if m is None:
            raise ConfigError(
                f"[dove] external_vteps: {entry!r} is not NAME=IP:INSTANCE[+INSTANCE...][:ENCAP]"
            )
        name, ip, instances, encap = m.groups()
        address = _ip("external_vteps", ip)
        ids = [_instance("external_vteps", entry, i) for i in instances.split("+") if i]
        if not ids or len(set(ids)) != len(ids):
            raise ConfigError(f"[dove] external_vteps: {entry!r}: an instance missing or repeated")
        encap = encap or "vxlan"
        if encap not in VTEP_ENCAPSULATIONS:
            raise ConfigError(
                f"[dove] external_vteps: {entry!r}: encapsulation {encap!r} is not one of "
                f"{', '.join(VTEP_ENCAPSULATIONS)}"
            )
        for other in found:
            if other.name == name:
                raise ConfigError(f"[dove] external_vteps: VTEP {name} is declared twice")
            if other.address == address:
                raise ConfigError(
                    f"[dove] external_vteps: {name} and {other.name} have the same address {ip}"
                )
        found.append(ExternalVtep(name, address, frozenset(ids), encap))
    return tuple(found)


def _vtep_mac(entry: str) -> VtepMac:
    m = _VTEP_MAC.match(entry)
    if m is None:
        raise ConfigError(f"[dove] external_macs: {entry!r} is not INSTANCE/MAC@NAME[=IPv4]")
    instance, mac, name, ip = m.groups()
    try:
        mac = normalize_mac(mac)
    except ValueError:
        raise ConfigError(f"[dove] external_macs: {entry!r}: not a unicast MAC") from None
    return VtepMac(
        _instance("external_macs", entry, instance),
        mac,
        name,
        _ip("external_macs", ip) if ip else None,
    )


def _check_vteps(kwargs: dict[str, object]) -> None:
    """The VTEPs against this host and each other; every MAC behind a declared VTEP, in
    one of its instances, declared once."""
    vteps = kwargs.get("external_vteps", ())
    macs = kwargs.get("external_macs", ())
    assert isinstance(vteps, tuple) and isinstance(macs, tuple)
    by_name = {v.name: v for v in vteps}
    if vteps and kwargs.get("role", "host") != "host":
        raise ConfigError("[dove] external_vteps: only a host (role = host) serves VTEPs")
    peers = set(kwargs.get("peers", ()))  # type: ignore[call-overload]
    taken = kwargs.get("accept_tunnel_types") or (kwargs.get("tunnel_type", "vxlan"),)
    for v in vteps:
        if v.encapsulation not in taken:  # type: ignore[operator]
            raise ConfigError(
                f"[dove] external_vteps: {v.name} speaks {v.encapsulation}, which this host "
                "does not take (accept_tunnel_types)"
            )
        if v.address == kwargs["underlay_ip"]:
            raise ConfigError(f"[dove] external_vteps: {v.name} is at this host's underlay_ip")
        if v.address in peers:
            raise ConfigError(f"[dove] external_vteps: {v.name} is at a peer's address")
    seen: set[tuple[int, str]] = set()
    for m in macs:
        vtep = by_name.get(m.vtep)
        if vtep is None:
            raise ConfigError(f"[dove] external_macs: {m.instance}/{m.mac}: no VTEP named {m.vtep}")
        if m.instance not in vtep.instances:
            raise ConfigError(
                f"[dove] external_macs: {m.instance}/{m.mac}: VTEP {m.vtep} does not serve "
                f"instance {m.instance}"
            )
        if (m.instance, m.mac) in seen:
            raise ConfigError(f"[dove] external_macs: {m.instance}/{m.mac} is declared twice")
        seen.add((m.instance, m.mac))
