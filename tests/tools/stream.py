"""A paced TCP transfer whose content the receiver can check (stdlib only).

    stream.py recv --port P --bytes N            prints "<bytes> <sha256>" at the end
    stream.py send --dst IP --port P --bytes N --rate BYTES_PER_S
                                                 prints "<bytes> <sha256>" of what it sent

The data is a deterministic pseudo-random stream, so both ends agree on the hash.
"""

from __future__ import annotations

import argparse
import hashlib
import socket
import time

CHUNK = 16384


def blocks(total: int):
    counter = 0
    sent = 0
    while sent < total:
        block = b"".join(hashlib.sha256(f"{counter}-{i}".encode()).digest() for i in range(512))
        counter += 1
        block = block[: min(len(block), total - sent)]
        sent += len(block)
        yield block


def send(dst: str, port: int, total: int, rate: float) -> None:
    digest = hashlib.sha256()
    sock = socket.create_connection((dst, port), timeout=30)
    sock.settimeout(120)
    start = time.monotonic()
    done = 0
    for block in blocks(total):
        for i in range(0, len(block), CHUNK):
            piece = block[i : i + CHUNK]
            sock.sendall(piece)
            digest.update(piece)
            done += len(piece)
            ahead = done / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)
    sock.close()
    print(done, digest.hexdigest(), flush=True)


def recv(port: int, total: int) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(1)
    print("listening", flush=True)
    conn, _ = server.accept()
    conn.settimeout(120)
    digest = hashlib.sha256()
    got = 0
    while True:
        data = conn.recv(65536)
        if not data:
            break
        digest.update(data)
        got += len(data)
    conn.close()
    print(got, digest.hexdigest(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("send", "recv"))
    parser.add_argument("--dst")
    parser.add_argument("--port", type=int, default=7777)
    parser.add_argument("--bytes", type=int, required=True)
    parser.add_argument("--rate", type=float, default=2e6)
    args = parser.parse_args()
    if args.role == "send":
        send(args.dst, args.port, args.bytes, args.rate)
    else:
        recv(args.port, args.bytes)


if __name__ == "__main__":
    main()
