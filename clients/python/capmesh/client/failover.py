"""Several gateway addresses as one channel: `a:50051,b:50051` (CAPMESH_ADDRESS, `--address`, a
service's `--gateway`), or one DNS name that resolves to every gateway (a Kubernetes Service).

gRPC fails over by itself once a channel knows every address: its `pick_first` policy sends all
calls to the first gateway that answers and, when that connection drops, reconnects through the
list to the next live one. So one channel serves the typed clients, the CLI and a service's
registration alike, and nobody above it handles a gateway's death; a call in flight on the gateway
that died ends UNAVAILABLE, and the next call goes to another. (A DNS name gets the same from the
default resolver, which hands every address it resolves to the policy.)

Host names in a list are resolved once, when the channel is made: gRPC's multi-address target
(`ipv4:1.2.3.4:50051,5.6.7.8:50051`) takes literal addresses only.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Any

# The default policy, named so that a reader of the channel's options sees how it fails over.
FAILOVER_OPTIONS: Sequence[tuple[str, Any]] = (("grpc.lb_policy_name", "pick_first"),)


def split_addresses(value: str) -> list[str]:
    """`"a:1, b:2"` -> ["a:1", "b:2"]: the comma-separated form every address setting accepts."""
    return [part.strip() for part in value.split(",") if part.strip()]


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _resolve(address: str) -> list[str]:
    """`host:port` -> its `ip:port` forms ([v6]:port for IPv6), IPv4 first."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"gateway address {address!r} is not HOST:PORT")
    literal = _literal(host)
    if literal is not None:
        ips = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise ValueError(f"gateway host {host!r} does not resolve: {exc.strerror}") from None
        ips = sorted({ipaddress.ip_address(info[4][0]) for info in infos}, key=lambda ip: ip.version)
    return [f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}" for ip in ips]


def channel_target(value: str) -> tuple[str, Sequence[tuple[str, Any]]]:
    """The gRPC target and channel options for an address setting: one address is left to gRPC's
    own resolver as it is; several become one multi-address target with failover."""
    addresses = split_addresses(value)
    if len(addresses) <= 1:
        return value.strip(), ()
    resolved = [ip for address in addresses for ip in _resolve(address)]
    # One target holds one address family: IPv4 when any address has one (loopback and private
    # networks usually do), else IPv6.
    v4 = [ip for ip in resolved if not ip.startswith("[")]
    scheme, chosen = ("ipv4", v4) if v4 else ("ipv6", resolved)
    return f"{scheme}:{','.join(dict.fromkeys(chosen))}", FAILOVER_OPTIONS
