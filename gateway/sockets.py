"""The gateway's listening sockets, bound before anything serves on them."""

from __future__ import annotations

import socket


def bound_tcp_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to `host:port` (port 0 picks one), not yet listening.

    IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they are
    TCP; without it every response on a kept-alive connection waits ~40 ms for an ACK. `reuse_port`
    lets several processes bind the same port, the kernel spreading connections among those that
    listen (gateway/workers.py)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
