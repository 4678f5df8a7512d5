"""``dove-agent``: start the DOVE agent as ``ryu-manager`` would start an app.

os-ken 4.x has no ``osken-manager``; like Neutron's native agent we parse the
flags with ``os_ken.cfg`` and run the app with ``AppManager``.  The flags
operators know (``--config-file``, ``--ofp-tcp-listen-port``,
``--ofp-listen-host``, ``--log-file``, ``--verbose``) work as there.  The app
(`dove_ryu.adapters.shell`) reads its ``[dove]`` options itself; we check them
first only to stop with one line before anything starts, and set up the bridge.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings

from dove_ryu.config import ConfigError, DoveConfig

DEFAULT_OF_PORT = 6653
APPS = ["dove_ryu.adapters.shell", "os_ken.controller.ofp_handler"]


def raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def without_eventlet() -> None:
    """Keep eventlet out of the agent (before os-ken or ovs is imported)."""
    # NOTE (ovs 4.0.0, os-ken 4.2.2): ovs.poller imports eventlet when it is
    # installed (os-ken 4.2 still depends on it), and eventlet brings dnspython and
    # cryptography: about 19 MB of the agent's 65 MB, for nothing, as os-ken runs its
    # native hub.  A module set to None fails to import, as if it were not installed.
    if os.environ.get("OSKEN_HUB_TYPE", "native") == "native":
        sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]
    else:  # eventlet warns on import
        warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")


def main(argv: list[str] | None = None) -> int:
    without_eventlet()
    from os_ken import cfg, log

    log.early_init_log(logging.INFO)
    import os_ken.base.app_manager  # noqa: F401  imports the controller: the --ofp-* flags

    from dove_ryu.adapters import options

    conf = cfg.CONF
    options.register(conf)
    # The controller only ever serves the local bridge: listen on loopback unless
    # the operator says otherwise (os-ken's own default is every address).
    conf.set_default("ofp_listen_host", "127.0.0.1")
    try:
        conf(
            args=sys.argv[1:] if argv is None else argv,
            project="dove-ryu",
            prog="dove-agent",
            default_config_files=[],
        )
    except cfg.Error as e:
        print(f"dove-agent: {e}", file=sys.stderr)
        return 2
    try:
        dove_cfg = options.dove_config(conf)
    except ConfigError as e:
        print(f"dove-agent: configuration error: {e}", file=sys.stderr)
        return 2
    if conf.ofp_tcp_listen_port is None:
        conf.set_override("ofp_tcp_listen_port", DEFAULT_OF_PORT)
    log.init_log()
    if dove_cfg.role == "vtep-controller":
        return run_vtep_controller(dove_cfg)

    from dove_ryu.adapters import ovsdb

    try:
        ovsdb.ensure_bridge(dove_cfg, conf.ofp_listen_host, conf.ofp_tcp_listen_port)
    except ovsdb.OvsdbError as e:
        print(f"dove-agent: cannot set up bridge {dove_cfg.host.bridge}: {e}", file=sys.stderr)
        return 1
    # SIGTERM ends the agent like Ctrl-C.
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    # Until the app can reload its keys, a SIGHUP must not end the agent.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return run_apps(APPS)


def run_vtep_controller(dove_cfg: DoveConfig) -> int:
    """``role = vtep-controller``: no bridge, no OpenFlow listener, no os-ken app; the
    controller's threads until SIGTERM (docs/interop.md section 3)."""
    from dove_ryu.adapters.vtep_agent import VtepAgent

    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    VtepAgent(dove_cfg).run()
    logging.getLogger("dove_ryu").info("VTEP controller stopped")
    logging.shutdown()
    return 0


def run_apps(apps: list[str]) -> int:
    """AppManager.run_apps without its shutdown.

    NOTE: os-ken 4.2.2's run_apps ends by calling ``kill()`` on its threads, which
    native-thread hubs do not have (AttributeError), and then waits forever on
    non-daemon threads; the agent never exited on SIGTERM.  We start the apps the
    same way, and on the way out close our own sockets and leave at once.
    """
    from os_ken.base.app_manager import AppManager
    from os_ken.lib import hub

    from dove_ryu.adapters import shell

    manager = AppManager.get_instance()
    manager.load_apps(apps)
    services = manager.instantiate_apps(**manager.create_contexts())
    dove_apps = [a for a in manager.applications.values() if isinstance(a, shell.DoveApp)]

    # SIGHUP reloads the deployment keys (as `dovectl keys reload` does), nothing else.
    def reload_keys(signum: int, frame: object) -> None:
        for app in dove_apps:
            app.reload_keys_later()

    signal.signal(signal.SIGHUP, reload_keys)
    try:
        hub.joinall(services)
    except KeyboardInterrupt:
        pass
    for app in manager.applications.values():
        if isinstance(app, shell.DoveApp):
            app.close()
    logging.getLogger("dove_ryu").info("agent stopped")
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
