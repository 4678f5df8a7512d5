"""The ``[dove]`` settings as oslo.config options (group ``dove``), as an os-ken app
declares its settings, so that any loader of the app (``dove-agent``, an os-ken
``AppManager``, a ryu-manager-style launcher) reads them from ``--config-file``.

The options are `dove_ryu.config.SETTINGS`: the same names, defaults and help
lines, and each option's type is that setting's check (`dove_ryu.config.parse`),
so ``conf.dove.learn_timeout`` is a checked float.  `dove_config` reads them into a
`DoveConfig`, raising `ConfigError` with one line naming a bad setting.
"""

from __future__ import annotations

import glob
import os
from typing import Any

from oslo_config import cfg, types

from dove_ryu import config
from dove_ryu.config import ConfigError, DoveConfig, Setting
from dove_ryu.protocol.auth import KeyRing

GROUP = "dove"

_TYPE_NAMES = {
    "IPv4Address": "IPv4 address",
    "IPv4Address | None": "IPv4 address",
    "tuple[IPv4Address, ...]": "list of IPv4 addresses",
    "tuple[str, ...]": "list of OVSDB remotes",
    "tuple[VtepBinding, ...]": "list of PORT:VLAN=INSTANCE",
    "bytes": "hex key",
    "bytes | None": "hex key",
    "tuple[tuple[int, bytes], ...]": "list of ID:HEX keys",
    "int": "integer value",
    "float": "floating point value",
    "str": "string value",
    "tuple[ExternalVtep, ...]": "list of NAME=IP:INSTANCE[+INSTANCE...][:ENCAP]",
    "tuple[VtepMac, ...]": "list of INSTANCE/MAC@NAME[=IPv4]",
}


class SettingType(types.ConfigType):  # type: ignore[misc]
    """An oslo.config type that checks a value as `dove_ryu.config.parse` does.

    A value that is not text (a default) is already checked and passes as is."""

    def __init__(self, setting: Setting) -> None:
        super().__init__(type_name=_TYPE_NAMES[setting.type])
        self.setting = setting

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return config.parse(self.setting.name, value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SettingType) and other.setting == self.setting

    def __hash__(self) -> int:
        return hash(self.setting)

    def _formatter(self, value: Any) -> str:
        if isinstance(value, tuple):
            return ", ".join(map(str, value))
        if isinstance(value, bytes):
            return value.hex()
        return str(value)


def _opt(setting: Setting) -> cfg.Opt:
    # An empty text default ("no site", "the hostname") is oslo.config's None.
    default = None if setting.default == "" else setting.default
    return cfg.Opt(setting.name, type=SettingType(setting), default=default, help=setting.help)


OPTS = [_opt(s) for s in config.SETTINGS]


def register(conf: cfg.ConfigOpts) -> None:
    """Declare the options on `conf` (again is harmless)."""
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """The options, for oslo-config-generator."""
    return [(GROUP, OPTS)]


def dove_config(conf: cfg.ConfigOpts) -> DoveConfig:
    """The `DoveConfig` of the parsed `conf` (the options registered, files read).

    A setting counts as given when the files name it or its value is not the
    default (an override); `from_values` checks them together as `from_mapping` does."""
    register(conf)
    in_files = _keys_in_files(conf)
    values: dict[str, object] = {}
    for opt in OPTS:
        value = _value(conf, opt.name)
        if opt.name in in_files or value != opt.default:
            values[opt.name] = value
    return config.from_values(values)


def _value(conf: cfg.ConfigOpts, name: str) -> object:
    try:
        return conf[GROUP][name]
    except (cfg.ConfigFileValueError, cfg.ConfigSourceValueError) as e:
        # NOTE: oslo.config 10.7 wraps the type's ValueError in a message that names
        # the option's source (a LocationInfo repr); ours already names the setting.
        if isinstance(e.__context__, ConfigError):
            raise e.__context__ from None
        raise ConfigError(f"[dove] {name}: {e}") from None


def reload_keyring(conf: cfg.ConfigOpts) -> KeyRing:
    """The key ring the configuration files hold now (the agent reloads its keys:
    SIGHUP, ``dovectl keys reload``).  Only `config.KEY_SETTINGS` are read again, from
    the same files (and key files) the agent started with; a bad one raises
    `ConfigError` and the agent keeps the keys it has."""
    text: dict[str, str] = {}
    for _path, section in _sections(conf):
        for name in config.KEY_SETTINGS:
            if section.get(name):
                text[name] = section[name][-1]  # a later file (or line) wins, as in oslo
    return config.keyring_from_mapping(text)


def _paths(conf: cfg.ConfigOpts) -> list[str]:
    paths = list(conf.config_file or ())
    for directory in conf.config_dir or ():
        paths += sorted(glob.glob(os.path.join(directory, "*.conf")))
    if not paths:
        raise ConfigError("no --config-file given; the [dove] section is required")
    return paths


def _sections(conf: cfg.ConfigOpts) -> list[tuple[str, dict[str, list[str]]]]:
    """Each configuration file's ``[dove]`` section, read from the file now, in order.

    NOTE: oslo.config ignores keys no option declares, and has no public way to list
    a section's keys; we read the files again with its own parser."""
    paths = _paths(conf)
    found = []
    for path in paths:
        sections: dict[str, dict[str, list[str]]] = {}
        try:
            cfg.ConfigParser(path, sections).parse()
        except OSError as e:
            raise ConfigError(f"config file {path}: {e.strerror}") from None
        except cfg.ParseError as e:
            # Never the parser's own text: it quotes the bad line, which may be a key.
            raise ConfigError(f"config file {path}: line {e.lineno} cannot be parsed") from None
        found.append((path, sections.get(GROUP, {})))
    return found


def _keys_in_files(conf: cfg.ConfigOpts) -> set[str]:
    """The settings the files' ``[dove]`` sections name; unknown ones are refused."""
    paths = _paths(conf)
    if GROUP not in conf.list_all_sections():
        raise ConfigError(f"config file {', '.join(paths)}: no [dove] section")
    keys: set[str] = set()
    for _path, section in _sections(conf):
        keys |= set(section)
    for key in sorted(keys):
        if key not in config.BY_NAME:
            raise ConfigError(f"[dove] {key}: unknown setting")
    return keys
