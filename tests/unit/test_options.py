"""The [dove] settings as oslo.config options: what any os-ken loader of the app reads."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from oslo_config import cfg

from dove_ryu.adapters import options
from dove_ryu.config import (
    SETTINGS,
    ConfigError,
    DhcpConfig,
    DoveConfig,
    HostConfig,
    LearningConfig,
    MetricsConfig,
    ProxyConfig,
    from_mapping,
)

pytestmark = pytest.mark.unit

KEY = "00112233445566778899aabbccddeeff"
HOST = {
    "underlay_ip": "10.99.0.1",
    "auth_key": KEY,
    "peers": "10.99.0.1, 10.99.0.2 10.99.0.3",
    "bridge": "br-x",
    "datapath_type": "netdev",
    "control_port": "4800",
    "host_name": "hv1",
    "learn_timeout": "0.5",
    "learn_retries": "5",
    "departure_memory": "30",
    "metrics_port": "9479",
    "metrics_host": "0.0.0.0",
}
PROXY = {
    "underlay_ip": "10.99.0.9",
    "auth_key": KEY,
    "peers": "10.99.0.1",
    "role": "proxy",
    "site": "east",
    "wan_ip": "192.0.2.1",
    "wan_peers": "192.0.2.1, 192.0.2.2",
    "proxy_priority": "200",
    "wan_mtu": "1400",
    "wan_oversize": "icmp",
}


def ini(tmp_path: Path, settings: dict[str, str], name: str = "dove.conf") -> Path:
    path = tmp_path / name
    path.write_text("[dove]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    return path


def parsed(*paths: Path) -> cfg.ConfigOpts:
    """A fresh ConfigOpts with the options, having read `paths` as --config-file."""
    conf = cfg.ConfigOpts()
    options.register(conf)
    args = [a for p in paths for a in ("--config-file", str(p))]
    conf(args=args, project="dove-ryu", default_config_files=[])
    return conf


def test_options_are_registered_in_group_dove_with_the_declared_defaults() -> None:
    conf = parsed()
    registered = {opt.dest for opt in options.list_opts()[0][1]}
    assert registered == {s.name for s in SETTINGS}
    assert len(SETTINGS) == 58  # the 56 settings, auth_key_file and auth_keys_file
    for setting in SETTINGS:  # an empty text default ("no site") is oslo.config's None
        assert conf.dove[setting.name] == (setting.default if setting.default != "" else None)
    for section in (LearningConfig(), ProxyConfig(), MetricsConfig(), DhcpConfig()):
        for name, declared in vars(section).items():
            assert conf.dove[name] == (declared if declared != "" else None), name
    assert conf.dove.control_port == HostConfig.control_port == 4799
    assert conf.dove.bridge == "br-dove" and conf.dove.peers == ()
    assert conf.dove.learn_timeout == 0.3 and conf.dove.wan_mtu == 1500
    assert conf.dove.metrics_port == 0 and str(conf.dove.metrics_host) == "127.0.0.1"
    assert conf.dove.role == "host" and conf.dove.underlay_ip is None
    # Registering again (the launcher, then the app's module) is harmless.
    options.register(conf)


@pytest.mark.parametrize("settings", [HOST, PROXY], ids=["host", "proxy"])
def test_a_config_file_gives_the_same_config_as_from_mapping(
    tmp_path: Path, settings: dict[str, str]
) -> None:
    assert options.dove_config(parsed(ini(tmp_path, settings))) == from_mapping(settings)


def test_later_files_win_and_the_key_may_come_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    first = ini(tmp_path, {**HOST, "learn_timeout": "9"}, "a.conf")
    settings = {k: v for k, v in HOST.items() if k != "auth_key"}
    second = ini(tmp_path, {"learn_timeout": "0.5", "auth_key_file": str(key_file)}, "b.conf")
    cfg_ = options.dove_config(parsed(first, second))
    assert cfg_.learning.learn_timeout == 0.5
    expected = from_mapping({**settings, "auth_key_file": str(key_file)})
    assert cfg_ == expected
    assert isinstance(cfg_, DoveConfig) and cfg_.host.auth_key == bytes.fromhex(KEY)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"auth_key": KEY}, "underlay_ip"),
        ({**HOST, "underlay_ip": "10.99.0.x"}, "underlay_ip"),
        ({**HOST, "auth_key": "short"}, "auth_key"),
        ({**HOST, "control_port": "70000"}, "control_port"),
        ({**HOST, "learn_timeout": "-1"}, "learn_timeout"),
        ({**HOST, "announce_interval": "nan"}, "announce_interval"),
        ({**HOST, "tunnel_type": "gre"}, "tunnel_type"),
        ({**HOST, "peers": "10.99.0.2, nonsense"}, "peers"),
        ({**HOST, "metrics_port": "http"}, "metrics_port"),
        ({**HOST, "colour": "blue"}, "colour"),
        ({**HOST, "site": "east"}, "site"),
        ({**PROXY, "wan_ip": PROXY["underlay_ip"]}, "wan_ip"),
        ({**PROXY, "wan_mtu": "100"}, "wan_mtu"),
        ({**HOST, "auth_key": "", "auth_key_file": "/nonexistent/key"}, "auth_key"),
    ],
)
def test_a_bad_value_names_the_setting(
    tmp_path: Path, settings: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        options.dove_config(parsed(ini(tmp_path, settings)))
    message = str(raised.value)
    assert message.startswith(f"[dove] {named}: ") and "\n" not in message, message
    with pytest.raises(ConfigError) as by_mapping:
        from_mapping(settings)
    assert str(by_mapping.value) == message


def test_no_dove_section_or_no_file(tmp_path: Path) -> None:
    other = tmp_path / "other.conf"
    other.write_text("[DEFAULT]\nverbose = true\n")
    with pytest.raises(ConfigError, match=r"no \[dove\] section"):
        options.dove_config(parsed(other))
    with pytest.raises(ConfigError, match="no --config-file given"):
        options.dove_config(parsed())


class NoWatcher:
    """Stands in for the OVSDB watcher (no OVSDB in unit tests)."""

    def __init__(self, *args: Any) -> None:
        pass

    def stop(self) -> None:
        pass


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_app_manager_loads_and_instantiates_the_app_by_module_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os_ken.cfg
    from os_ken.base.app_manager import AppManager

    from dove_ryu.adapters import shell

    assert not hasattr(shell, "CONFIG")  # nothing to set before loading
    manager = AppManager()
    manager.load_apps(["dove_ryu.adapters.shell"])
    app_cls = manager.applications_cls["dove_ryu.adapters.shell"]
    assert app_cls is shell.DoveApp

    # Instantiated as os-ken does, it reads os-ken's CONF: here a fresh one.
    settings = {
        "underlay_ip": "127.0.0.1",
        "auth_key": KEY,
        "control_port": str(free_udp_port()),
        "admin_socket": str(tmp_path / "admin.sock"),
        "learn_retries": "7",
    }
    monkeypatch.setattr(os_ken.cfg, "CONF", parsed(ini(tmp_path, settings)))
    monkeypatch.setattr(shell, "PortWatcher", NoWatcher)
    app = app_cls()
    try:
        assert app.cfg == from_mapping(settings)
        assert app.cfg.learning.learn_retries == 7
    finally:
        app.close()
