"""The ListOperations filter: `field = "value"` terms joined by AND.

Fields: `state` (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, or the full JOB_STATE_ name),
`capability`, `method`, `request_id`, `done` (true/false) and `labels.<key>`. Operators `=` and
`!=`; values quoted or bare. Example: `labels.characterId = "char_001" AND state = SUCCEEDED`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from capmesh.gateway.server.jobs.record import JobRecord
from capmesh.gateway.v1 import job_service_pb2 as jobs_pb2
from capmesh.services.runtime.errors import InvalidArgument

_TERM = re.compile(
    r'\s*(?P<field>[A-Za-z_][\w.-]*)\s*(?P<op>!=|=)\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[^\s"]+))\s*'
)
_AND = re.compile(r"\s+AND\s+")
_PLAIN_FIELDS = ("capability", "method", "request_id")


@dataclass(frozen=True)
class Term:
    field: str
    negate: bool
    value: str

    def matches(self, record: JobRecord) -> bool:
        return (self._actual(record) == self.value) != self.negate

    def _actual(self, record: JobRecord) -> str:
        if self.field == "state":
            return jobs_pb2.JobState.Name(record.state).removeprefix("JOB_STATE_")
        if self.field == "done":
            return "true" if record.done else "false"
        if self.field.startswith("labels."):
            return record.labels.get(self.field[len("labels.") :], "\0absent")
        return getattr(record, self.field)


def _term(text: str) -> Term:
    match = _TERM.fullmatch(text)
    if match is None:
        raise InvalidArgument.single(
            "filter", f'cannot read {text.strip()!r}: expected field = "value"', reason="INVALID_FILTER"
        )
    name = match["field"]
    value = match["quoted"].replace('\\"', '"') if match["quoted"] is not None else match["bare"]
    if name == "state":
        value = value.upper().removeprefix("JOB_STATE_")
        if "JOB_STATE_" + value not in jobs_pb2.JobState.DESCRIPTOR.values_by_name or value == "UNSPECIFIED":
            raise InvalidArgument.single("filter", f"unknown state {value!r}", reason="INVALID_FILTER")
    elif name == "done":
        value = value.lower()
        if value not in ("true", "false"):
            raise InvalidArgument.single("filter", "done must be true or false", reason="INVALID_FILTER")
    elif not (name in _PLAIN_FIELDS or (name.startswith("labels.") and len(name) > len("labels."))):
        raise InvalidArgument.single(
            "filter",
            f"unknown field {name!r}; use state, capability, method, request_id, done or labels.<key>",
            reason="INVALID_FILTER",
        )
    return Term(name, match["op"] == "!=", value)


def indexed_labels(text: str) -> dict[str, str]:
    """The labels every match must carry (`labels.k = "v"` terms): the store lists only the jobs in
    those labels' indexes, so a filtered list costs in proportion to its matches, not to the store.
    The whole filter is still applied to what the store returns."""
    if not text.strip():
        return {}
    terms = [_term(part) for part in _AND.split(text.strip())]
    return {t.field[len("labels.") :]: t.value for t in terms if t.field.startswith("labels.") and not t.negate}


def parse_filter(text: str) -> Callable[[JobRecord], bool]:
    if not text.strip():
        return lambda record: True
    terms = [_term(part) for part in _AND.split(text.strip())]
    return lambda record: all(term.matches(record) for term in terms)
