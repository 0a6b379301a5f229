"""Calls OpenAI-compatible HTTP APIs, retrying what a retry can fix and naming what it cannot:

- timeouts, dropped connections and 5xx: retried up to `max_retries` times with exponential
  backoff and full jitter;
- 429: retried after the server's Retry-After (seconds or HTTP date), else the backoff;
- 401 / 403: UNAUTHENTICATED / PERMISSION_DENIED naming the setting that holds the key, no retry;
- a content-policy rejection (400 whose error code or type says so): FAILED_PRECONDITION, no retry;
- other 4xx: INVALID_ARGUMENT with the API's own message, no retry.

The API key is a secret: it is sent in the Authorization header and never logged or put in errors.
Cancellation is honoured between attempts and while backing off.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Iterator
from typing import Any, Protocol

import httpx
import structlog

from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import (
    PROMPT_TOO_LONG,
    CapmeshError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from capmesh.services.runtime.settings import env_name

log = structlog.get_logger("capmesh.remote_http")

CONTENT_POLICY_MARKERS = ("content_policy", "content_filter", "safety", "moderation", "policy_violation")
BACKOFF_MAX_S = 20.0  # the longest wait between two attempts, however many failed


class RemoteApiSettings(Protocol):
    """The `openai_*` settings every capability with a remote engine has."""

    @property
    def openai_base_url(self) -> str: ...

    @property
    def openai_api_key(self) -> str: ...

    @property
    def openai_timeout_s(self) -> float: ...

    @property
    def openai_max_retries(self) -> int: ...

    @property
    def openai_backoff_base_s(self) -> float: ...


class RemoteApiClient:
    """A synchronous client (engines run in worker threads) for one OpenAI-compatible API.

    `env_prefix` is the capability's settings prefix: errors about the key name its variable."""

    def __init__(self, settings: RemoteApiSettings, env_prefix: str) -> None:
        self.base_url = settings.openai_base_url
        self._key_setting = env_name(env_prefix, "openai_api_key")
        self._max_retries = settings.openai_max_retries
        self._backoff_base_s = settings.openai_backoff_base_s
        headers = {"User-Agent": "capmesh"}
        if settings.openai_api_key:
            headers["Authorization"] = f"Bearer {settings.openai_api_key}"
        timeout_s = settings.openai_timeout_s
        self._http = httpx.Client(
            base_url=self.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
        )

    def close(self) -> None:
        self._http.close()

    # -- public calls --------------------------------------------------------------------------
    def post_json(self, path: str, body: dict[str, Any], cancel: CancelToken) -> httpx.Response:
        """POSTs JSON and returns the successful response (body read), retrying per the policy."""
        return self._with_retries("POST", path, body, cancel, stream=False)

    def stream_lines(self, path: str, body: dict[str, Any], cancel: CancelToken) -> Iterator[str]:
        """POSTs JSON and yields the response's lines as they arrive (for SSE answers).

        Retries happen only before the first line is yielded: after partial output a failure
        is raised, never retried, so no caller ever sees output twice.
        """
        response = self._with_retries("POST", path, body, cancel, stream=True)
        try:
            for line in response.iter_lines():
                cancel.raise_if_cancelled()
                yield line
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            raise Unavailable(
                f"the remote API dropped the stream: {type(exc).__name__}", reason="REMOTE_STREAM_BROKEN"
            ) from exc
        finally:
            response.close()

    # -- retry policy --------------------------------------------------------------------------
    def _with_retries(
        self, method: str, path: str, body: dict[str, Any], cancel: CancelToken, *, stream: bool
    ) -> httpx.Response:
        attempt = 0
        while True:
            cancel.raise_if_cancelled()
            delay: float | None
            try:
                request = self._http.build_request(method, path.lstrip("/"), json=body)
                response = self._http.send(request, stream=stream)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                failure: CapmeshError = Unavailable(
                    f"the remote API at {self.base_url} did not answer: {type(exc).__name__}",
                    reason="REMOTE_UNREACHABLE",
                )
                delay = self._backoff(attempt)
            else:
                if response.status_code < 400:
                    return response
                if stream:
                    response.read()
                response.close()
                failure, delay = self._classify(response, attempt)
            if delay is None or attempt >= self._max_retries:
                raise failure
            attempt += 1
            log.warning("remote_api.retry", path=path, attempt=attempt, delay_s=round(delay, 3), error=failure.message)
            if cancel.wait(delay):
                cancel.raise_if_cancelled()

    def _backoff(self, attempt: int) -> float:
        ceiling = min(BACKOFF_MAX_S, self._backoff_base_s * (2**attempt))
        return random.uniform(0, ceiling)

    def _classify(self, response: httpx.Response, attempt: int) -> tuple[CapmeshError, float | None]:
        """Maps an error response to (the error to raise, the delay before a retry or None)."""
        status = response.status_code
        message, code = _error_text(response)
        where = f"the remote API at {self.base_url}"
        if status == 401:
            return Unauthenticated(
                f"{where} rejected the API key (401): check {self._key_setting}", reason="REMOTE_UNAUTHENTICATED"
            ), None
        if status == 403:
            return PermissionDenied(
                f"{where} refused access (403): check that {self._key_setting} may use this model",
                reason="REMOTE_PERMISSION_DENIED",
            ), None
        if status == 429:
            retry_after = _retry_after_seconds(response)
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            return Unavailable(
                f"{where} is rate limiting (429): {message}", retry_after_s=delay, reason="REMOTE_RATE_LIMITED"
            ), delay
        if status >= 500:
            failure = Unavailable(f"{where} failed ({status}): {message}", reason="REMOTE_SERVER_ERROR")
            return failure, self._backoff(attempt)
        if "context_length_exceeded" in (code or ""):  # OpenAI's code for a prompt past the model's window
            refused = f"{where} refused the prompt: {message}"
            return InvalidArgument.single("messages", refused, reason=PROMPT_TOO_LONG), None
        if any(marker in (code or "").lower() or marker in message.lower() for marker in CONTENT_POLICY_MARKERS):
            return FailedPrecondition(
                f"{where} rejected the content: {message}", reason="CONTENT_POLICY_VIOLATION"
            ), None
        return InvalidArgument(
            [FieldViolation("request", f"{where} refused the request ({status}): {message}")], reason="REMOTE_REJECTED"
        ), None


def _error_text(response: httpx.Response) -> tuple[str, str]:
    try:
        payload = response.json()
    except (json.JSONDecodeError, ValueError, UnicodeDecodeError):
        return response.text[:300] or response.reason_phrase, ""
    error = payload.get("error", payload) if isinstance(payload, dict) else {}
    if isinstance(error, str):
        return error, ""
    if not isinstance(error, dict):
        return str(error)[:300], ""
    code = " ".join(str(error.get(k) or "") for k in ("code", "type")).strip()
    return str(error.get("message") or response.reason_phrase), code


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None
