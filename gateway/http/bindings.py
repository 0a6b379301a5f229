"""HTTP bindings read from the `google.api.http` annotations of the generated descriptors.

Every capability contract of the catalogue and the gateway's own services (files, jobs, registry) are
walked, plus google.longrunning.Operations;
each annotated method becomes one `Binding` (HTTP verb, compiled path template, body rule, input
and output message classes). Nothing here is written by hand per route: a new annotated RPC is
served over HTTP as soon as its stubs are generated and its capability has a catalogue row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from google.api import annotations_pb2, http_pb2
from google.longrunning import operations_pb2
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message

# Error details and well-known types must be in the pool for JSON rendering of Any.
from google.rpc import error_details_pb2, status_pb2  # noqa: F401

from capmesh.gateway.v1 import file_service_pb2, job_service_pb2, registry_service_pb2
from capmesh.services.catalog import load_contracts

# The gateway's own contracts; the capabilities' come from the catalogue.
GATEWAY_CONTRACTS = (file_service_pb2, job_service_pb2, registry_service_pb2, operations_pb2)

_SEGMENT_VARIABLE = re.compile(r"\{([a-zA-Z_][\w.]*)(?:=([^}]*))?\}")


class PathTemplate:
    """A google.api.http path template such as `/v1/files/{file_id}:download` or
    `/v1/{name=operations/**}`, compiled to a regex that yields the variables' values."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.variables: list[str] = []
        self.verb = ""
        path = template
        # The verb is the ":name" after the last segment (not inside a variable).
        last_close = path.rfind("}")
        colon = path.rfind(":")
        if colon > last_close and colon > path.rfind("/"):
            path, self.verb = path[:colon], path[colon + 1 :]
        pattern, position = "", 0
        for match in _SEGMENT_VARIABLE.finditer(path):
            pattern += re.escape(path[position : match.start()])
            name, sub = match.group(1), match.group(2) or "*"
            self.variables.append(name)
            pattern += f"(?P<{self._group(name)}>{self._segments(sub)})"
            position = match.end()
        pattern += re.escape(path[position:])
        if self.verb:
            pattern += re.escape(":" + self.verb)
        self.regex = re.compile(f"^{pattern}$")
        self.literal_length = len(_SEGMENT_VARIABLE.sub("", template))

    @staticmethod
    def _group(name: str) -> str:
        return name.replace(".", "__")

    @staticmethod
    def _segments(sub: str) -> str:
        parts = []
        for segment in sub.split("/"):
            if segment == "**":
                parts.append(r"[^:]+?")
            elif segment == "*":
                parts.append(r"[^/:]+")
            else:
                parts.append(re.escape(segment))
        return "/".join(parts)

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.match(path)
        if found is None:
            return None
        return {name: found.group(self._group(name)) for name in self.variables}

    def openapi_path(self) -> str:
        """The template in OpenAPI form: `{name=operations/*}` -> `operations/{name}`.

        A variable with a literal prefix keeps the prefix in the path, so that a client filling
        in the last segment alone produces the whole value."""

        def render(match: re.Match) -> str:
            name, sub = match.group(1), match.group(2)
            if not sub or sub in {"*", "**"}:
                return "{" + name + "}"
            literals = [s for s in sub.split("/") if s not in {"*", "**"}]
            wildcard = any(s in {"*", "**"} for s in sub.split("/"))
            return "/".join(literals) + ("/{" + name + "}" if wildcard else "")

        return _SEGMENT_VARIABLE.sub(render, self.template)

    def fixed_values(self) -> dict[str, str]:
        """Variables whose pattern has no wildcard take a fixed value (`{name=operations}`)."""
        fixed = {}
        for match in _SEGMENT_VARIABLE.finditer(self.template):
            sub = match.group(2)
            if sub and "*" not in sub:
                fixed[match.group(1)] = sub
        return fixed

    def value_prefix(self, name: str) -> str:
        """The literal part of a variable's pattern before its wildcard (`operations/`)."""
        for match in _SEGMENT_VARIABLE.finditer(self.template):
            if match.group(1) == name and match.group(2):
                literals = []
                for segment in match.group(2).split("/"):
                    if segment in {"*", "**"}:
                        break
                    literals.append(segment)
                return "/".join(literals) + "/" if literals else ""
        return ""


@dataclass(frozen=True)
class Binding:
    """One HTTP route of one RPC."""

    service: str  # "capmesh.tts.v1.TtsService"
    method: descriptor.MethodDescriptor
    http_method: str  # GET, POST, PUT, PATCH, DELETE
    template: PathTemplate
    body: str  # "", "*" or a top-level field name
    input_class: type[Message] = field(repr=False)
    output_class: type[Message] = field(repr=False)
    response_body: str = ""
    capability: bool = True  # a capability's RPC (routed to a backend), not one of the gateway's own

    @property
    def grpc_path(self) -> str:
        return f"/{self.service}/{self.method.name}"

    @property
    def full_name(self) -> str:
        return self.method.full_name

    @property
    def server_streaming(self) -> bool:
        return self.method.server_streaming

    @property
    def client_streaming(self) -> bool:
        return self.method.client_streaming


def _rule_pairs(rule: http_pb2.HttpRule):
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        yield rule.custom.kind.upper(), rule.custom.path, rule
    elif kind:
        yield kind.upper(), getattr(rule, kind), rule
    for extra in rule.additional_bindings:
        yield from _rule_pairs(extra)


@cache
def api_file_descriptors() -> tuple[descriptor.FileDescriptor, ...]:
    """The file descriptors of every capability contract and of the gateway's own services."""
    return tuple(module.DESCRIPTOR for module in (*load_contracts(), *GATEWAY_CONTRACTS))


def message_class(message_descriptor: descriptor.Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(message_descriptor)


@cache
def load_bindings() -> tuple[Binding, ...]:
    """Every annotated RPC, most specific template first (verbs and longer literals win)."""
    bindings = []
    own_files = {module.DESCRIPTOR.name for module in GATEWAY_CONTRACTS}
    for file in api_file_descriptors():
        for service in file.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(annotations_pb2.http):
                    continue
                rule = options.Extensions[annotations_pb2.http]
                for verb, path, sub_rule in _rule_pairs(rule):
                    bindings.append(
                        Binding(
                            service=service.full_name,
                            method=method,
                            http_method=verb,
                            template=PathTemplate(path),
                            body=sub_rule.body,
                            response_body=sub_rule.response_body,
                            input_class=message_class(method.input_type),
                            output_class=message_class(method.output_type),
                            capability=file.name not in own_files,
                        )
                    )
    bindings.sort(key=lambda b: (not b.template.verb, -b.template.literal_length))
    return tuple(bindings)


def find_binding(http_method: str, path: str) -> tuple[Binding | None, dict[str, str], frozenset[str]]:
    """The binding for a request: (binding, path variables, the HTTP methods the path serves)."""
    allowed: set[str] = set()
    for binding in load_bindings():
        variables = binding.template.match(path)
        if variables is None:
            continue
        if binding.http_method == http_method or (http_method == "HEAD" and binding.http_method == "GET"):
            return binding, variables, frozenset({binding.http_method})
        allowed.add(binding.http_method)
    if "GET" in allowed:
        allowed.add("HEAD")
    return None, {}, frozenset(allowed)


def method_descriptor(grpc_path: str) -> descriptor.MethodDescriptor:
    """`/pkg.Service/Method` -> its descriptor, whether annotated or not."""
    service_name, _, method_name = grpc_path.lstrip("/").partition("/")
    for file in api_file_descriptors():
        for service in file.services_by_name.values():
            if service.full_name == service_name and method_name in service.methods_by_name:
                return service.methods_by_name[method_name]
    raise KeyError(grpc_path)
