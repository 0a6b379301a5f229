"""Who is calling: keys, their roles and quotas, and the mesh's backend credential.

Keys come from two places, merged:
- `api_keys` (`CAPMESH_GATEWAY_API_KEYS`, comma-separated): client keys, as before, with the
  gateway's default quotas; their id is `key-` and the first 8 hex digits of their sha256;
- `keys_file`: JSON lines, one key each (blank lines and `#` comments are skipped), holding the
  key's sha256, never the key:
      {"id": "alice", "role": "client", "sha256": "<hex>", "requests_per_minute": 60,
       "concurrent_calls": 2, "llm_tokens_per_minute": 20000}
  `role` is client (the default), backend or admin; a quota left out takes the gateway's default
  (`quota_*` settings), and 0 means unlimited. The file is read again when its modification time
  changes (checked every `keys_reload_s`) and on SIGHUP; a file that does not parse is reported
  and the keys read before stay in force.
The mesh secret (`mesh_secret`) is the backend credential: metadata `x-capmesh-mesh-secret`.

Keys are looked up by their sha256, so the gateway holds no key it could leak, and no log line
names a key (only ids). An unknown key and a missing one are UNAUTHENTICATED.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import json
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from capmesh.gateway.server.config import GatewaySettings
from capmesh.services.runtime.errors import Unauthenticated
from capmesh.services.runtime.settings import SettingsError
from capmesh.services.runtime.tasks import stop_tasks
from capmesh.services.runtime.trust import secret_matches

log = structlog.get_logger("capmesh.auth")


class Role(enum.Enum):
    CLIENT = "client"  # capabilities, jobs, files, the registry's read-only view
    BACKEND = "backend"  # all a client may, and registering, heartbeating, deregistering backends
    ADMIN = "admin"  # everything


@dataclass(frozen=True)
class Quota:
    """Per-key limits; 0 means unlimited."""

    requests_per_minute: int = 0
    concurrent_calls: int = 0
    llm_tokens_per_minute: int = 0

    def __bool__(self) -> bool:
        return bool(self.requests_per_minute or self.concurrent_calls or self.llm_tokens_per_minute)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: `key_id` names it to backends and in logs (never the key itself)."""

    key_id: str
    role: Role
    quota: Quota = field(default_factory=Quota)


# The backend credential (mesh secret), and every caller of a gateway that asks for no credential.
MESH = Principal("mesh", Role.BACKEND)
OPEN = Principal("", Role.ADMIN)


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def default_quota(settings: GatewaySettings) -> Quota:
    return Quota(
        settings.quota_requests_per_minute, settings.quota_concurrent_calls, settings.quota_llm_tokens_per_minute
    )


class KeysFileError(SettingsError):
    """A keys file that cannot be used; the message names the file and the line."""


def parse_keys_file(text: str, source: str, defaults: Quota) -> dict[str, Principal]:
    """The keys of a keys file by sha256; raises KeysFileError naming the bad line."""
    keys: dict[str, Principal] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KeysFileError(f"{where}: not a JSON object ({exc.msg})") from None
        if not isinstance(entry, dict):
            raise KeysFileError(f"{where}: not a JSON object")
        digest = str(entry.get("sha256", "")).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise KeysFileError(f"{where}: sha256 must be the key's SHA-256 as 64 hex digits")
        try:
            role = Role(entry.get("role", "client"))
        except ValueError:
            raise KeysFileError(f"{where}: role must be client, backend or admin") from None
        limits = {}
        for name in ("requests_per_minute", "concurrent_calls", "llm_tokens_per_minute"):
            value = entry.get(name, getattr(defaults, name))
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise KeysFileError(f"{where}: {name} must be a whole number, 0 (unlimited) or more")
            limits[name] = value
        key_id = str(entry.get("id") or f"key-{digest[:8]}")
        keys[digest] = Principal(key_id, role, Quota(**limits))
    return keys


def env_keys(api_keys: tuple[str, ...], defaults: Quota) -> dict[str, Principal]:
    keys = {}
    for key in api_keys:
        digest = sha256_hex(key)
        keys[digest] = Principal(f"key-{digest[:8]}", Role.CLIENT, defaults)
    return keys


class Keys:
    """The gateway's credentials, reloadable: `authenticate` turns what a call presents into a
    `Principal` or the UNAUTHENTICATED error to answer with."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._defaults = default_quota(settings)
        self._env = env_keys(settings.api_keys, self._defaults)
        self._path = Path(settings.keys_file) if settings.keys_file else None
        self._stamp: tuple[int, int, int] | None = None  # the file's mtime, size and inode when read
        self._task: asyncio.Task | None = None
        self._keys = dict(self._env)
        if self._path is not None:
            self._keys = self._read()  # a bad file at start stops the gateway (KeysFileError)
        # Nobody needs a credential on a gateway with neither keys nor a mesh secret (as before
        # keys existed); with a mesh secret alone, calls without one are clients.
        self._anonymous: Principal | None = None
        if not self.keys_required:
            self._anonymous = Principal("", Role.CLIENT, self._defaults) if settings.mesh_secret else OPEN

    @property
    def keys_required(self) -> bool:
        return bool(self._keys) or self._path is not None

    def _read(self) -> dict[str, Principal]:
        assert self._path is not None
        try:
            self._stamp = _stamp(self._path)
            text = self._path.read_text()
        except OSError as exc:
            raise KeysFileError(f"{self._path}: {exc.strerror}") from None
        return {**self._env, **parse_keys_file(text, str(self._path), self._defaults)}

    def reload(self) -> bool:
        """Reads the keys file again; on failure the keys in force stay (and the error is logged)."""
        if self._path is None:
            return False
        try:
            keys = self._read()
        except KeysFileError as exc:
            log.error("auth.keys_file_invalid", error=str(exc))
            return False
        self._keys = keys
        log.info("auth.keys_reloaded", file=str(self._path), keys=len(keys))
        return True

    def authenticate(self, headers: Mapping[str, str | bytes]) -> Principal | Unauthenticated:
        """The caller of a call with these headers (lower-case names: gRPC metadata or HTTP)."""
        secret = headers.get("x-capmesh-mesh-secret")
        if secret is not None:
            if secret_matches(secret, self._settings.mesh_secret):
                return MESH
            return Unauthenticated("the mesh secret is not valid", reason="MESH_CREDENTIAL_INVALID")
        presented = _text(headers.get("x-api-key")) or _bearer(_text(headers.get("authorization")))
        if not presented:
            if self._anonymous is not None:
                return self._anonymous
            return Unauthenticated(
                "an API key is required: send 'authorization: Bearer <key>' or 'x-api-key: <key>'",
                reason="API_KEY_MISSING",
            )
        principal = self._keys.get(sha256_hex(presented))
        if principal is None and self._anonymous is not None:
            # A gateway without keys takes any key as no key: SDKs such as openai's always send one
            # (the README's `api_key="unused"`), and refusing it would break them on `capmesh up`.
            return self._anonymous
        if principal is None:
            return Unauthenticated("the API key is not valid", reason="API_KEY_INVALID")
        return principal

    # -- following the file ---------------------------------------------------------------------
    async def start(self) -> None:
        if self._path is None:
            return
        loop = asyncio.get_running_loop()
        # SIGHUP reloads at once; only the main thread's loop can take signals (a gateway started
        # inside tests runs elsewhere and relies on the modification-time check).
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        self._task = loop.create_task(self._follow())

    async def _follow(self) -> None:
        assert self._path is not None
        while True:
            await asyncio.sleep(self._settings.keys_reload_s)  # polling the file's modification time
            try:
                stamp = _stamp(self._path)
            except OSError:
                continue
            if stamp != self._stamp:
                self.reload()

    async def stop(self) -> None:
        if self._task is not None:
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await stop_tasks([self._task])


def _stamp(path: Path) -> tuple[int, int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _bearer(authorization: str) -> str:
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
