"""``dovectl``: look at a running agent through its admin socket."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dove_ryu.admin import query

DEFAULT_SOCKET = "/var/run/dove-ryu/admin.sock"


def _print_status(status: dict[str, Any]) -> None:
    print(
        f"host {status['host']} underlay {status['underlay_ip']} "
        f"switch {'connected' if status['connected'] else 'DISCONNECTED'}"
    )
    for instance, info in status["instances"].items():
        print(f"instance {instance}  members: {', '.join(info['members']) or '-'}")
        for ep in info["local"]:
            print(
                f"  local   {ep['mac']}  {','.join(ep['ips']) or '-':<16} port {ep['port']}"
                f" seq {ep['seq']}"
            )
        for ep in info["learned"]:
            print(
                f"  learned {ep['mac']}  {','.join(ep['ips']) or '-':<16} at {ep['host']}"
                f" seq {ep['seq']} age {ep['age']}s"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dovectl", description=__doc__)
    parser.add_argument(
        "--admin-socket",
        default=DEFAULT_SOCKET,
        help=f"the agent's admin socket (default {DEFAULT_SOCKET})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("status", help="instances, local and learned endpoints, members")
    sub.add_parser("counters", help="the agent's counters")
    args = parser.parse_args(argv)
    try:
        answer = query(args.admin_socket, {"cmd": args.cmd})
    except (OSError, ValueError) as e:
        print(f"dovectl: cannot reach the agent at {args.admin_socket}: {e}", file=sys.stderr)
        return 1
    if "error" in answer:
        print(f"dovectl: {answer['error']}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    elif args.cmd == "status":
        _print_status(answer)
    else:
        for name, value in sorted(answer.items()):
            print(f"{name:32} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
