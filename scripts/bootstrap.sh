#!/usr/bin/env bash
# Install what dove-ryu needs on a fresh Debian 12 machine (run as root).
# Safe to run twice: apt and pip are idempotent, the venv is reused when its
# pinned requirements have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(openvswitch-switch mininet iperf3 tcpdump tshark ethtool graphviz
              iputils-ping arping iproute2 python3-venv python3-dev gcc
              ovn-central ovn-host udhcpc openvswitch-vtep)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # tshark asks whether non-root users may capture; answer for it.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    # OVN (a benchmark peer) runs only inside emulation namespaces: its postinst must not
    # start ovn-northd/ovn-controller/ovsdb in the root namespace. A policy-rc.d that exits
    # 101 forbids service starts during the install (kept if the machine already has one).
    tmp_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        tmp_policy=/usr/sbin/policy-rc.d
        trap 'rm -f "$tmp_policy"' EXIT
        printf '#!/bin/sh\nexit 101\n' > "$tmp_policy"
        chmod 755 "$tmp_policy"
    fi
    apt-get install -y -qq "${missing[@]}" >/dev/null
    if [ -n "$tmp_policy" ]; then rm -f "$tmp_policy"; trap - EXIT; fi
fi
# Whatever started anyway (systemd units, an earlier install): stop and disable it.
if [ -x /usr/share/ovn/scripts/ovn-ctl ]; then
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now ovn-central ovn-northd ovn-controller ovn-host \
            ovn-ovsdb-server-nb ovn-ovsdb-server-sb >/dev/null 2>&1 || true
    fi
    /usr/share/ovn/scripts/ovn-ctl stop_controller >/dev/null 2>&1 || true
    /usr/share/ovn/scripts/ovn-ctl stop_northd >/dev/null 2>&1 || true
fi

# The venv uses Debian's python3 so that Debian's mininet package (built for
# it) can be imported; only mininet is exposed, not all of dist-packages.
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV" >&2
    /usr/bin/python3 -m venv "$VENV"
fi
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$VENV/system-mininet"
ln -sfn /usr/lib/python3/dist-packages/mininet "$VENV/system-mininet/mininet"
echo "$PWD/$VENV/system-mininet" > "$site/dove-system-mininet.pth"

stamp="$VENV/.installed-$(cat setup.cfg requirements*.txt 2>/dev/null | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "bootstrap: installing Python dependencies into $VENV" >&2
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -r requirements-dev.txt
    "$VENV/bin/pip" install -q -e .
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi

# The root namespace's own OVS is not used by dove-ryu (each emulated
# hypervisor runs its own), but Mininet's cleanup expects ovs-vsctl to answer.
# The daemons must not inherit our descriptors beyond stdio: a caller's `flock`
# lock file among them would stay locked for as long as OVS runs.
if ! /usr/share/openvswitch/scripts/ovs-ctl status >/dev/null 2>&1; then
    (
        for fd in /proc/self/fd/*; do
            n=${fd##*/}
            if [ "$n" -gt 2 ]; then eval "exec $n>&-"; fi
        done 2>/dev/null
        /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/dev/null 2>&1 || true
    )
fi
echo "bootstrap: ready ($VENV)" >&2
