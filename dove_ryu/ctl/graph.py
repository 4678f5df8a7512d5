"""``dovectl graph``: the deployment as the agents see it, drawn with Graphviz.

Sites are clusters; each host and proxy is a box listing the instances it serves
with its local and learned endpoint counts; edges are what carries overlay
traffic: hosts of a site to each other (shared instances) and to their site's
active proxy, proxies to each other across sites.  The picture is built from the
agents' own status (their admin sockets), so it shows what they believe.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

FORMATS = ("png", "svg", "pdf")


class GraphError(Exception):
    """The picture cannot be made (no Graphviz, an unknown format)."""


def _site_of(status: dict[str, Any]) -> str:
    """A proxy knows its site; a host is in the site of the proxies it knows."""
    if status.get("role") == "proxy":
        return str(status["site"])
    sites = {p["site"] for p in status.get("proxies", {}).values()}
    return sites.pop() if len(sites) == 1 else ""


def deployment(statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """Nodes (with site, role and per-instance counts) and edges, as plain data."""
    nodes, edges = [], set()
    address_to_node: dict[tuple[str, str], str] = {}
    for st in statuses:
        site = _site_of(st)
        address_to_node[(site, st["underlay_ip"])] = st["host"]
        if st.get("role") == "proxy":
            address_to_node[("wan", st["wan_ip"])] = st["host"]
    for st in statuses:
        site = _site_of(st)
        instances = {
            k: {"local": len(v["local"]), "learned": len(v["learned"])}
            for k, v in st["instances"].items()
        }
        node = {
            "name": st["host"],
            "role": st.get("role", "host"),
            "site": site,
            "underlay_ip": st["underlay_ip"],
            "instances": instances,
        }
        if node["role"] == "proxy":
            node.update(wan_ip=st["wan_ip"], active=st["active"])
        nodes.append(node)
        standby = st.get("role") == "proxy" and not st.get("active")
        for v in st["instances"].values():
            # A standby proxy keeps its membership warm but carries nothing.
            for member in [] if standby else v["members"]:
                peer = address_to_node.get((site, member))
                if peer is not None:
                    edges.add((*sorted((st["host"], peer)), "site"))
            for remote in v.get("remote_proxies", []):
                peer = address_to_node.get(("wan", remote))
                if peer is not None and st.get("active"):
                    edges.add((*sorted((st["host"], peer)), "wan"))
    return {
        "nodes": sorted(nodes, key=lambda n: (n["site"], n["role"], n["name"])),
        "edges": [{"a": a, "b": b, "kind": kind} for a, b, kind in sorted(edges)],
    }


def _quote(text: str) -> str:
    """A DOT string; line breaks become DOT's centred line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + escaped + '"'


def _label(node: dict[str, Any]) -> str:
    lines = [node["name"]]
    if node["role"] == "proxy":
        lines[0] += f" (proxy, {'active' if node['active'] else 'standby'})"
        lines.append(f"{node['underlay_ip']} / {node['wan_ip']}")
    else:
        lines.append(node["underlay_ip"])
    for instance, n in sorted(node["instances"].items()):
        lines.append(f"instance {instance}: {n['local']} local, {n['learned']} learned")
    return "\n".join(lines)


def to_dot(statuses: list[dict[str, Any]]) -> str:
    """The Graphviz DOT text of the deployment."""
    view = deployment(statuses)
    out = [
        "graph dove {",
        '  graph [fontname="Helvetica", label="DOVE deployment", labelloc=t];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    by_site: dict[str, list[dict[str, Any]]] = {}
    for node in view["nodes"]:
        by_site.setdefault(node["site"], []).append(node)
    for index, (site, nodes) in enumerate(sorted(by_site.items())):
        inner = []
        for node in nodes:
            color = (
                "lightblue"
                if node["role"] == "host"
                else ("gold" if node.get("active") else "lightgrey")
            )
            inner.append(
                f"    {_quote(node['name'])} [label={_quote(_label(node))}, fillcolor={color}];"
            )
        if site:
            out.append(f"  subgraph cluster_{index} {{")
            out.append(f"    label={_quote('site ' + site)}; style=dashed;")
            out += inner
            out.append("  }")
        else:
            out += [line[2:] for line in inner]
    for edge in view["edges"]:
        style = (
            'style=bold, color=darkorange, label="inter-site"'
            if edge["kind"] == "wan"
            else "color=grey40"
        )
        out.append(f"  {_quote(edge['a'])} -- {_quote(edge['b'])} [{style}];")
    out.append("}")
    return "\n".join(out) + "\n"


def render(dot: str, path: str) -> None:
    """Write ``dot`` as an image; the format is the file's extension."""
    fmt = path.rsplit(".", 1)[-1].lower()
    if fmt not in FORMATS:
        raise GraphError(f"{path}: the image format must be one of {', '.join(FORMATS)} (or .dot)")
    dot_bin = shutil.which("dot")
    if dot_bin is None:
        raise GraphError("Graphviz 'dot' not found: install the graphviz package")
    proc = subprocess.run(
        [dot_bin, f"-T{fmt}", "-o", path], input=dot, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise GraphError(f"dot failed: {proc.stderr.strip()}")
