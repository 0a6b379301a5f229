"""Which role may call which gRPC method of the gateway: the one table both ports consult.

The gRPC interceptor checks it for every call; the HTTP bridge checks it in `GatewayCalls` for the
method each HTTP route calls, so a route and its gRPC method always have the same rule.

| method                                          | who may call it         |
| ----------------------------------------------- | ----------------------- |
| grpc.health.v1.Health/*                         | anyone, no credential   |
| RegistryService/Register, Heartbeat, Deregister | backend, admin          |
| capmesh.admin.* (AdminService)                  | admin                   |
| every other method: capabilities, jobs, files,  | client, backend, admin  |
| operations, the registry's views, reflection    |                         |
"""

from __future__ import annotations

from capmesh.gateway.server.auth.keys import Principal, Role
from capmesh.services.runtime.errors import PermissionDenied

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
_REGISTRY = "/capmesh.gateway.v1.RegistryService/"
BACKEND_METHODS = frozenset({_REGISTRY + "Register", _REGISTRY + "Heartbeat", _REGISTRY + "Deregister"})
ADMIN_PREFIXES = ("/capmesh.admin.",)

EVERYONE = frozenset(Role)
BACKENDS = frozenset({Role.BACKEND, Role.ADMIN})
ADMINS = frozenset({Role.ADMIN})


def is_open(method: str) -> bool:
    """Methods that need no credential at all (health probes)."""
    return method.startswith(OPEN_PREFIXES)


def allowed_roles(method: str) -> frozenset[Role]:
    if method in BACKEND_METHODS:
        return BACKENDS
    if method.startswith(ADMIN_PREFIXES):
        return ADMINS
    return EVERYONE


def check_role(principal: Principal, method: str) -> PermissionDenied | None:
    """None when `principal` may call `method`; otherwise the error to answer with."""
    allowed = allowed_roles(method)
    if principal.role in allowed:
        return None
    names = " or ".join(sorted(role.value for role in allowed))
    return PermissionDenied(
        f"{method} needs the {names} role; this credential is {principal.role.value}",
        reason="ROLE_NOT_ALLOWED",
        metadata={"method": method, "role": principal.role.value},
    )
