"""A long-lived paced TCP stream whose every byte the receiver checks (stdlib only: it
runs in a VM's namespace). The stream is a 16-byte marker (hex) repeated, so each
segment says which tenant and stream it belongs to, in a capture too.

    soak_stream.py recv --port P --marker HEX
    soak_stream.py send --dst IP --port P --marker HEX --rate BYTES_PER_S

Both print ``p <epoch> <bytes>`` every second, ``done <bytes>`` at a clean end (the
sender ends on SIGINT or SIGTERM: it shuts its side, the receiver sees EOF), ``error
<what>`` (exit 1) when the connection breaks, and the receiver ``corrupt <offset>``
(exit 2) when a byte is not the one expected.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import time

CHUNK = 1024
BUF = 65536


def say(*words: object) -> None:
    print(*words, flush=True)


def repeated(pattern: bytes, size: int) -> bytes:
    return pattern * (size // len(pattern) + 2)


def recv(port: int, pattern: bytes) -> int:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(1)
    say("listening")
    conn, _ = server.accept()
    conn.settimeout(1.0)
    rep = repeated(pattern, BUF)
    got, last = 0, 0.0
    while True:
        now = time.time()
        if now - last >= 1.0:
            say("p", f"{now:.3f}", got)
            last = now
        try:
            data = conn.recv(BUF)
        except TimeoutError:
            continue
        except OSError as e:
            say("error", type(e).__name__, e)
            return 1
        if not data:
            break
        off = got % len(pattern)
        if data != rep[off : off + len(data)]:
            bad = next(i for i, b in enumerate(data) if b != rep[off + i])
            say("corrupt", got + bad)
            return 2
        got += len(data)
    conn.close()
    say("p", f"{time.time():.3f}", got)
    say("done", got)
    return 0


def send(dst: str, port: int, pattern: bytes, rate: float) -> int:
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(True))
    deadline = time.monotonic() + 30
    while True:
        try:
            sock = socket.create_connection((dst, port), timeout=2)
            break
        except OSError as e:
            if time.monotonic() > deadline or stop:
                say("error", "connect", e)
                return 1
            time.sleep(0.5)
    sock.settimeout(1.0)  # send() raises with nothing sent, so the count stays exact
    rep = repeated(pattern, CHUNK)
    start, sent, last = time.monotonic(), 0, 0.0
    try:
        while not stop:
            now = time.time()
            if now - last >= 1.0:
                say("p", f"{now:.3f}", sent)
                last = now
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(min(ahead, 0.2))
                continue
            off = sent % len(pattern)
            try:
                sent += sock.send(rep[off : off + CHUNK])
            except TimeoutError:
                continue
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(30)
        sock.recv(1)  # the receiver closes once it has read everything
    except OSError as e:
        say("error", type(e).__name__, e)
        return 1
    sock.close()
    say("p", f"{time.time():.3f}", sent)
    say("done", sent)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("send", "recv"))
    parser.add_argument("--dst")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--marker", required=True, help="the 16-byte pattern, in hex")
    parser.add_argument("--rate", type=float, default=40_000)
    args = parser.parse_args()
    pattern = bytes.fromhex(args.marker)
    if args.role == "send":
        return send(args.dst, args.port, pattern, args.rate)
    return recv(args.port, pattern)


if __name__ == "__main__":
    sys.exit(main())
