"""Domain errors that engines and servicers raise; the runtime maps them to gRPC statuses.

This module never imports grpc: engines raise these, and `capmesh.services.runtime.status`
turns them into `google.rpc.Status` with `ErrorInfo` (and `BadRequest` / `RetryInfo` where they
apply). The `code` is the canonical status code name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

DOMAIN = "capmesh.dev"
# The ErrorInfo reason of an INVALID_ARGUMENT whose prompt is longer than the LLM's context window:
# a caller that composes prompts (DocGen) shortens the prompt and asks again.
PROMPT_TOO_LONG = "PROMPT_TOO_LONG"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request: `field` is the proto field path, `description` the rule."""

    field: str
    description: str


class CapmeshError(Exception):
    """Base class: a failure with a canonical code, a machine-readable reason and a message.

    `retry_after_s` tells the caller when trying again may succeed (sent as RetryInfo); only the
    kinds of failure that are worth retrying (full, unavailable) set it.
    """

    code = "INTERNAL"
    # The ErrorInfo reason when the raiser names none; None: the code itself (NOT_FOUND, UNAVAILABLE ...).
    default_reason: str | None = None
    default_message = ""
    default_retry_after_s: float | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        message = self.default_message if message is None else message
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason or self.code
        self.metadata = dict(metadata or {})
        self.retry_after_s = self.default_retry_after_s if retry_after_s is None else retry_after_s


class InvalidArgument(CapmeshError):
    """The caller sent a request that breaks a rule; `violations` name each bad field."""

    code = "INVALID_ARGUMENT"

    def __init__(self, violations: Iterable[FieldViolation], *, message: str | None = None, reason: str | None = None):
        self.violations = list(violations)
        text = message or "; ".join(f"{v.field}: {v.description}" for v in self.violations) or "invalid request"
        super().__init__(text, reason=reason)

    @classmethod
    def single(cls, field_path: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        return cls([FieldViolation(field_path, description)], reason=reason)


class NotFound(CapmeshError):
    code = "NOT_FOUND"


class FailedPrecondition(CapmeshError):
    """A valid request that the current state refuses (no face in the image, a model not loaded)."""

    code = "FAILED_PRECONDITION"


class ResourceExhausted(CapmeshError):
    """Full: the caller may try again after `retry_after_s` seconds."""

    code = "RESOURCE_EXHAUSTED"
    default_reason = "QUEUE_FULL"
    default_retry_after_s = 1.0


class Unavailable(CapmeshError):
    """A dependency (a model, a remote API, a backend) cannot serve now; retrying may help."""

    code = "UNAVAILABLE"


class Unauthenticated(CapmeshError):
    code = "UNAUTHENTICATED"


class PermissionDenied(CapmeshError):
    code = "PERMISSION_DENIED"


class Cancelled(CapmeshError):
    """The caller cancelled, and the engine stopped at its next step."""

    code = "CANCELLED"
    default_message = "the call was cancelled"


class DeadlineExceeded(CapmeshError):
    """The caller's deadline passed, and the engine stopped at its next step."""

    code = "DEADLINE_EXCEEDED"
    default_message = "the deadline passed before the work finished"


class ModelLoadError(CapmeshError):
    """A model failed to load; the message gives the reason and the service status records it."""

    code = "UNAVAILABLE"
    default_reason = "MODEL_LOAD_FAILED"


class Internal(CapmeshError):
    code = "INTERNAL"


# One error class per code; the code's name finds it (ModelLoadError is a kind of UNAVAILABLE, and
# InvalidArgument takes field violations, so neither is here).
_BY_CODE: dict[str, type[CapmeshError]] = {
    kind.code: kind
    for kind in (
        NotFound,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        Unauthenticated,
        PermissionDenied,
        Cancelled,
        DeadlineExceeded,
        Internal,
    )
}


def error_type(code: str) -> type[CapmeshError]:
    """The domain error of a canonical code's name (`NOT_FOUND`); Internal for a code without one."""
    return _BY_CODE.get(code, Internal)


@dataclass
class Violations:
    """Collects field violations so that one error reports every bad field at once.

    >>> v = Violations()
    >>> v.check(speed > 0, "speed", "must be greater than 0")
    >>> v.raise_if_any()
    """

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.items.append(FieldViolation(field_path, description))

    def check(self, ok: bool, field_path: str, description: str) -> None:
        if not ok:
            self.add(field_path, description)

    def raise_if_any(self, *, reason: str | None = None) -> None:
        if self.items:
            raise InvalidArgument(self.items, reason=reason)

    def __bool__(self) -> bool:
        return bool(self.items)
