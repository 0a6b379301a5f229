"""JSON <-> protobuf messages: HTTP request parts -> request message, response message -> JSON,
as a `google.api.http` annotation says.

- path variables and query parameters set fields by their (dotted) proto field path, typed by the
  field's descriptor; repeated fields take repeated query parameters;
- the body (`*`: the whole request; a field name: that field) is parsed in the proto3 JSON
  mapping; a malformed body or a wrong field type is an INVALID_ARGUMENT naming the field;
- responses are rendered in the proto3 JSON mapping (lowerCamelCase names, every field shown).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TypeAlias

from google.protobuf import descriptor, json_format
from google.protobuf.message import Message

from capmesh.gateway.server.http.bindings import Binding
from capmesh.gateway.server.http.errors import invalid_field

FD: TypeAlias = descriptor.FieldDescriptor

_INTEGER_TYPES = {
    FD.TYPE_INT32,
    FD.TYPE_INT64,
    FD.TYPE_UINT32,
    FD.TYPE_UINT64,
    FD.TYPE_SINT32,
    FD.TYPE_SINT64,
    FD.TYPE_FIXED32,
    FD.TYPE_FIXED64,
    FD.TYPE_SFIXED32,
    FD.TYPE_SFIXED64,
}
_INTEGER_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}

# "... at StreamSynthesizeRequest.speed" / "Failed to parse sample_rate field" / "has no field named "nope""
_AT_PATH = re.compile(r" at (?:[\w]+)((?:\.[\w\[\]\"]+)+)\.?$")
_FAILED_FIELD = re.compile(r"Failed to parse (\w+) field")
_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]+)"')

RENDER_OPTIONS = {"always_print_fields_with_no_presence": True}


def render(message: Message) -> dict:
    return json_format.MessageToDict(message, **RENDER_OPTIONS)


def render_response(binding: Binding, message: Message) -> object:
    if binding.response_body:
        return render(message).get(_camel(binding.response_body))
    return render(message)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def parse_error_field(error: Exception) -> str:
    """The field path a json_format.ParseError is about, as well as it can be told."""
    text = str(error)
    for pattern in (_AT_PATH, _UNKNOWN_FIELD, _FAILED_FIELD):
        found = pattern.search(text)
        if found:
            return found.group(1).lstrip(".")
    return ""


_INDEX = re.compile(r"(\[\d+\])$")


def proto_field_path(message_descriptor: descriptor.Descriptor, path: str) -> str:
    """`segments[0].pauseAfterSeconds` -> `segments[0].pause_after_seconds` (names as in the proto)."""
    names = []
    current = message_descriptor
    for part in path.split(".") if path else ():
        index = _INDEX.search(part)
        bare = part[: index.start()] if index else part
        field = None
        if current is not None:
            field = current.fields_by_name.get(bare) or _by_json_name(current, bare)
        names.append((field.name if field else bare) + (index.group(1) if index else ""))
        current = field.message_type if field is not None and field.type == FD.TYPE_MESSAGE else None
    return ".".join(names)


def parse_json_body(raw: bytes) -> object:
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid_field("body", f"is not valid JSON: {exc}") from None


def merge_json(message: Message, payload: object, field_prefix: str = "") -> None:
    """Parses proto3 JSON into `message`; errors become INVALID_ARGUMENT naming the field."""
    if not isinstance(payload, dict):
        raise invalid_field(field_prefix or "body", "must be a JSON object")
    _refuse_loose_scalars(message.DESCRIPTOR, payload, field_prefix)
    try:
        json_format.ParseDict(payload, message)
    except (json_format.ParseError, TypeError, ValueError, KeyError, AttributeError) as exc:
        name = proto_field_path(message.DESCRIPTOR, parse_error_field(exc))
        path = ".".join(p for p in (field_prefix, name) if p) or "body"
        raise invalid_field(path, _short(exc)) from None


def _refuse_loose_scalars(message_descriptor: descriptor.Descriptor, payload: dict, prefix: str) -> None:
    """Refuses what the OpenAPI schema does not allow but protobuf's parser would read: a JSON
    true/false where the field is not a bool (a Python bool is an int, so `"steps": true` would
    silently mean 1), and an enum given by number instead of by name."""
    for key, value in payload.items():
        field = message_descriptor.fields_by_name.get(key) or _by_json_name(message_descriptor, key)
        if field is None:
            continue  # the parser names unknown fields itself
        path = ".".join(p for p in (prefix, field.name) if p)
        values = value if isinstance(value, list) and field.is_repeated else [value]
        if field.type == FD.TYPE_MESSAGE:
            nested = field.message_type
            if nested.GetOptions().map_entry and isinstance(value, dict):
                value_field = nested.fields_by_name["value"]
                if value_field.type != FD.TYPE_MESSAGE:
                    _check_scalars(value_field, list(value.values()), path)
                continue
            if nested.full_name.startswith("google.protobuf."):
                continue  # well-known types have JSON forms of their own
            for item in values:
                if isinstance(item, dict):
                    _refuse_loose_scalars(nested, item, path)
            continue
        _check_scalars(field, values, path)


def _check_scalars(field: FD, values: list, path: str) -> None:
    if field.type != FD.TYPE_BOOL and any(isinstance(v, bool) for v in values):
        raise invalid_field(path, "must not be true or false")
    if field.type == FD.TYPE_ENUM and any(v is not None and not isinstance(v, str) for v in values):
        raise invalid_field(path, f"must be the name of a {field.enum_type.name} value")


def _short(error: Exception) -> str:
    return str(error).split("\n")[0]


def _convert_scalar(field: FD, raw: str, path: str):
    try:
        if field.type in _INTEGER_TYPES:
            value = int(raw)
            low, high = _INTEGER_RANGES[field.type]
            if not low <= value <= high:
                raise ValueError(f"{value} is out of range")
            return value
        if field.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
            return float(raw)
        if field.type == FD.TYPE_BOOL:
            if raw.lower() in {"true", "1"}:
                return True
            if raw.lower() in {"false", "0"}:
                return False
            raise ValueError("must be true or false")
        if field.type == FD.TYPE_ENUM:
            if raw in field.enum_type.values_by_name:
                return field.enum_type.values_by_name[raw].number
            number = int(raw)
            if number not in field.enum_type.values_by_number:
                raise ValueError(f"is not a value of {field.enum_type.full_name}")
            return number
        if field.type == FD.TYPE_BYTES:
            return raw.encode()
        return raw
    except ValueError as exc:
        raise invalid_field(path, f"cannot take {raw!r}: {exc}") from None


def set_field_path(message: Message, path: str, raw: str) -> None:
    """Sets `a.b.c` on `message` from a string, converting by the field's type."""
    *parents, leaf = path.split(".")
    target = message
    for name in parents:
        field = target.DESCRIPTOR.fields_by_name.get(name)
        if field is None or field.type != FD.TYPE_MESSAGE or field.is_repeated:
            raise invalid_field(path, f"is not a field of {message.DESCRIPTOR.full_name}")
        target = getattr(target, name)
    field = target.DESCRIPTOR.fields_by_name.get(leaf) or _by_json_name(target.DESCRIPTOR, leaf)
    if field is None:
        raise invalid_field(path, f"is not a field of {message.DESCRIPTOR.full_name}")
    if field.type == FD.TYPE_MESSAGE:
        _set_message_from_string(target, field, raw, path)
        return
    value = _convert_scalar(field, raw, path)
    if field.is_repeated:
        getattr(target, field.name).append(value)
    else:
        setattr(target, field.name, value)


def _set_message_from_string(target: Message, field: FD, raw: str, path: str) -> None:
    """Well-known types given as strings in a query (timestamps, durations, wrappers)."""
    if field.is_repeated or field.message_type.GetOptions().map_entry:
        raise invalid_field(path, "cannot be set from a query parameter")
    holder = {field.json_name: raw}
    try:
        json_format.ParseDict(holder, target, ignore_unknown_fields=False)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise invalid_field(path, _short(exc)) from None


def _by_json_name(message_descriptor: descriptor.Descriptor, name: str) -> FD | None:
    for field in message_descriptor.fields:
        if field.json_name == name:
            return field
    return None


def build_request(
    binding: Binding,
    path_values: Mapping[str, str],
    query: Iterable[tuple[str, str]],
    body: bytes,
    prepare: Callable[[object], object] | None = None,
) -> Message:
    """The request message of `binding` from the HTTP request's parts; `prepare` may adjust the
    parsed JSON body first (for conveniences the proto3 JSON mapping lacks)."""
    request = binding.input_class()
    payload = parse_json_body(body) if binding.body else None
    if prepare is not None and payload is not None:
        payload = prepare(payload)
    if binding.body == "*":
        merge_json(request, payload)
    elif binding.body:
        field = request.DESCRIPTOR.fields_by_name[binding.body]
        wrapped = {field.json_name: payload}
        merge_json(request, wrapped)
    bound = set(path_values)
    if binding.body != "*":
        for name, value in query:
            if name in bound or name == binding.body:
                continue
            set_field_path(request, name, value)
    for name, value in {**binding.template.fixed_values(), **path_values}.items():
        request_field_clear(request, name)
        set_field_path(request, name, value)
    return request


def request_field_clear(message: Message, path: str) -> None:
    *parents, leaf = path.split(".")
    target = message
    for name in parents:
        if name not in target.DESCRIPTOR.fields_by_name:
            return
        target = getattr(target, name)
    if leaf in target.DESCRIPTOR.fields_by_name:
        target.ClearField(leaf)
