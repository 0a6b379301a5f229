"""An OpenAPI 3 document generated from the proto descriptors.

Paths come from the `google.api.http` annotations (the same bindings `annotated_routes` serves),
schemas from the message descriptors in the proto3 JSON mapping (lowerCamelCase names, 64-bit
integers as strings, enums as their names, well-known types in their JSON forms), descriptions
from the proto comments. The HTTP-only routes (OpenAI-compatible, file upload and download,
operations) are described by hand in `EXTRA_PATHS`.
"""

from __future__ import annotations

from functools import cache
from typing import TypeAlias

from google.protobuf import descriptor

from capmesh import __version__
from capmesh.gateway.server.files.service import MAX_TTL_S
from capmesh.gateway.server.http.annotated_routes import SUCCESS_STATUS
from capmesh.gateway.server.http.bindings import Binding, load_bindings
from capmesh.gateway.server.http.comments import proto_comments

FD: TypeAlias = descriptor.FieldDescriptor

ERROR_SCHEMA = "capmesh.http.Error"
OPENAI_ERROR_SCHEMA = "capmesh.http.OpenAIError"
INT64_PATTERN = r"^-?[0-9]{1,19}$"
UINT64_PATTERN = r"^[0-9]{1,20}$"


def _int64(pattern: str, minimum: int, maximum: int, format_: str) -> dict[str, object]:
    """64-bit integers: strings in answers (the proto3 JSON mapping), strings or numbers in requests."""
    return {
        "anyOf": [
            {"type": "string", "pattern": pattern},
            {"type": "integer", "minimum": minimum, "maximum": maximum},
        ],
        "format": format_,
    }


_INT64 = _int64(INT64_PATTERN, -(2**63), 2**63 - 1, "int64")
_UINT64 = _int64(UINT64_PATTERN, 0, 2**64 - 1, "uint64")

_SCALARS: dict[int, dict[str, object]] = {
    FD.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FD.TYPE_FLOAT: {"type": "number", "format": "float"},
    FD.TYPE_INT32: {"type": "integer", "format": "int32"},
    FD.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FD.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FD.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    FD.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    FD.TYPE_INT64: _INT64,
    FD.TYPE_SINT64: _INT64,
    FD.TYPE_SFIXED64: _INT64,
    FD.TYPE_UINT64: _UINT64,
    FD.TYPE_FIXED64: _UINT64,
    FD.TYPE_BOOL: {"type": "boolean"},
    FD.TYPE_STRING: {"type": "string"},
    FD.TYPE_BYTES: {"type": "string", "format": "byte"},
}

_WELL_KNOWN: dict[str, dict[str, object]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {
            "@type": {
                "type": "string",
                "description": "The type URL of the packed message, type.googleapis.com/<full message name>.",
            }
        },
        "additionalProperties": True,
        "description": "A message of any type, with its type URL in @type and its fields alongside.",
    },
    "google.protobuf.DoubleValue": {"type": "number"},
    "google.protobuf.FloatValue": {"type": "number"},
    "google.protobuf.Int64Value": {"type": "string", "pattern": INT64_PATTERN},
    "google.protobuf.UInt64Value": {"type": "string", "pattern": UINT64_PATTERN},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "minimum": 0},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
}


FILE_ID_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9_-]{32}$"}
PAGE_SIZE_LIMITS: dict[str, object] = {"minimum": 0, "maximum": 1000}

# Limits the contract itself fixes (the same in every deployment), keyed by proto field, merged into
# the field's schema. Limits a deployment sets (text length, image sizes, steps: each service's
# settings) are not here: a request over them is a 400 with a field violation naming the limit.
FIELD_LIMITS: dict[str, dict[str, object]] = {
    "capmesh.gateway.v1.ListFilesRequest.page_size": PAGE_SIZE_LIMITS,
    "google.longrunning.ListOperationsRequest.page_size": PAGE_SIZE_LIMITS,
    "capmesh.gateway.v1.UploadHeader.ttl_seconds": {"minimum": 0, "maximum": MAX_TTL_S},
    "capmesh.gateway.v1.UploadHeader.name": {"maxLength": 255},
    "capmesh.tts.v1.StreamSynthesizeRequest.text": {"minLength": 1},
    "capmesh.imagegen.v1.StreamGenerateImagesRequest.prompt": {"minLength": 1},
    "capmesh.tts.v1.StreamSynthesizeSceneRequest.segments": {"minItems": 1},
    "capmesh.docgen.v1.StreamGenerateOutlineRequest.query": {"minLength": 1},
}

# Fields without which a request is refused, by message (proto names).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "capmesh.tts.v1.StreamSynthesizeRequest": ("text",),
    "capmesh.tts.v1.StreamSynthesizeSceneRequest": ("segments",),
    "capmesh.imagegen.v1.StreamGenerateImagesRequest": ("prompt",),
    "capmesh.videogen.v1.StreamGenerateVideoRequest": ("image",),
    "capmesh.talkinghead.v1.StreamGenerateTalkingHeadRequest": ("reference_image",),
    "capmesh.docgen.v1.StreamGenerateOutlineRequest": ("query",),
    "capmesh.docgen.v1.StreamGenerateDocumentRequest": ("outline",),
    "capmesh.gateway.v1.SubmitJobRequest": ("method", "request"),
}


class _Schemas:
    def __init__(self, comments: dict[str, str]) -> None:
        self.comments = comments
        self.components: dict[str, dict] = {}

    def ref(self, message: descriptor.Descriptor) -> dict:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.components:
            self.components[message.full_name] = {}  # placeholder: recursion-safe
            self.components[message.full_name] = self._message(message)
        return {"$ref": f"#/components/schemas/{message.full_name}"}

    def _message(self, message: descriptor.Descriptor) -> dict:
        schema: dict = {"type": "object", "properties": {}}
        if message.full_name in self.comments:
            schema["description"] = self.comments[message.full_name]
        for field in message.fields:
            schema["properties"][field.json_name] = self.field(field)
        required = [message.fields_by_name[name].json_name for name in REQUIRED_FIELDS.get(message.full_name, ())]
        if required:
            schema["required"] = required
        return schema

    def field(self, field: FD) -> dict:
        if field.type == FD.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            schema = {"type": "object", "additionalProperties": self.single(value)}
        elif field.is_repeated:
            schema = {"type": "array", "items": self.single(field)}
        else:
            schema = self.single(field)
        limits = FIELD_LIMITS.get(field.full_name, {})
        extra: dict[str, object] = dict(limits)
        if field.name not in REQUIRED_FIELDS.get(field.containing_type.full_name, ()) and not (
            "minLength" in limits or "minItems" in limits
        ):
            extra["nullable"] = True  # the proto3 JSON mapping reads null as the field's default
        description = self.comments.get(field.full_name)
        if description:
            extra["description"] = description
        if extra.get("nullable") and "enum" in schema:
            schema = {**schema, "enum": [*schema["enum"], None]}  # an enum lists null to allow it
        # A $ref ignores siblings in OpenAPI 3.0, so a reference with more to say is wrapped in allOf.
        return {"allOf": [schema], **extra} if "$ref" in schema else {**schema, **extra}

    def single(self, field: FD) -> dict:
        if field.type == FD.TYPE_MESSAGE:
            return self.ref(field.message_type)
        if field.type == FD.TYPE_ENUM:
            names = [v.name for v in field.enum_type.values]
            enum = field.enum_type.full_name
            described = [
                f"{v.name}: {self.comments[f'{enum}.{v.name}']}"
                for v in field.enum_type.values
                if f"{enum}.{v.name}" in self.comments
            ]
            schema = {"type": "string", "enum": names}
            if described:
                schema["description"] = "\n".join(described)
            return schema
        return dict(_SCALARS[field.type])


def _field_at(message: descriptor.Descriptor, path: str) -> FD | None:
    field = None
    for name in path.split("."):
        if message is None:
            return None
        field = message.fields_by_name.get(name)
        if field is None:
            return None
        message = field.message_type if field.type == FD.TYPE_MESSAGE else None
    return field


def _query_fields(binding: Binding) -> list[FD]:
    bound = {name.split(".")[0] for name in binding.template.variables}
    fields = []
    for field in binding.method.input_type.fields:
        if field.name in bound or field.name == binding.body:
            continue
        if field.type == FD.TYPE_MESSAGE:
            continue
        fields.append(field)
    return fields


def _operation(binding: Binding, schemas: _Schemas, comments: dict[str, str], operation_id: str) -> dict:
    method = binding.method
    summary = comments.get(method.full_name, "")
    operation: dict = {
        "operationId": operation_id,
        "tags": [binding.service.rsplit(".", 1)[-1]],
        "summary": summary.split(". ")[0].rstrip(".") if summary else method.name,
        "description": summary + f"\n\ngRPC: `{binding.grpc_path}`",
        "parameters": [],
    }
    for name in binding.template.variables:
        field = _field_at(method.input_type, name)
        prefix = binding.template.value_prefix(name)
        if binding.template.fixed_values().get(name):
            continue
        description = comments.get(field.full_name, "") if field else ""
        if prefix:
            description += f" The path holds the part after `{prefix}`."
        operation["parameters"].append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": description.strip(),
                "schema": dict(FILE_ID_SCHEMA) if name == "file_id" else {"type": "string", "pattern": "^[^/:]+$"},
            }
        )
    if binding.body != "*":
        for field in _query_fields(binding):
            schema = {**schemas.single(field), **FIELD_LIMITS.get(field.full_name, {})}
            if field.is_repeated:
                schema = {"type": "array", "items": schema}
            operation["parameters"].append(
                {
                    "name": field.name,
                    "in": "query",
                    "required": False,
                    "description": comments.get(field.full_name, ""),
                    "schema": schema,
                    **({"explode": True} if field.is_repeated else {}),
                }
            )
    if binding.body:
        body_schema = (
            schemas.ref(method.input_type)
            if binding.body == "*"
            else schemas.field(method.input_type.fields_by_name[binding.body])
        )
        # An empty body reads as {} (each field its default), so the body itself is optional.
        operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": body_schema}}}
    output = schemas.ref(method.output_type)
    status = str(SUCCESS_STATUS.get(binding.full_name, 200))
    if binding.server_streaming:
        content = {
            "text/event-stream": {"schema": _sse_event_schema(method.output_type.full_name)},
            "application/x-ndjson": {"schema": output},
        }
        description = (
            "A stream of messages, sent once the call has been accepted: a refused call (invalid, over "
            "capacity) gets its error status instead (ask for NDJSON with Accept: application/x-ndjson)."
        )
    else:
        content = {"application/json": {"schema": output}}
        description = "OK"
    operation["responses"] = {status: {"description": description, "content": content}, **_error_responses(binding)}
    if not operation["parameters"]:
        del operation["parameters"]
    return operation


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _sse_event_schema(message: str) -> dict:
    """One Server-Sent Event as a client parses it: in OpenAPI 3.0 the schema of an event stream
    describes each event."""
    return {
        "type": "object",
        "description": f"Each `message` event's data is one {message} in JSON; an `error` event's data is the "
        f"error body ({ERROR_SCHEMA}), and it ends the stream.",
        "properties": {
            "event": {"type": "string", "enum": ["message", "error"]},
            "id": {"type": "string"},
            "data": {"type": "string"},
        },
    }


def _error(description: str, schema: str = ERROR_SCHEMA, *, retry_after: bool = False) -> dict:
    response: dict = {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}
    if retry_after:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before retrying (from the status's RetryInfo).",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return response


def _error_responses(binding: Binding | None, schema: str = ERROR_SCHEMA) -> dict:
    """The statuses any call may get before its first byte; `binding` None: a hand-written route with a body."""
    responses = {
        "400": _error("Invalid input: BadRequest names each bad field.", schema),
        "429": _error(
            "Over capacity (every backend busy and the route queue full or timed out) or over a quota.",
            schema,
            retry_after=True,
        ),
    }
    if binding is None or binding.body:
        responses["413"] = _error("The body is over the gateway's limit (max_body_bytes, or one gRPC message).", schema)
    responses["default"] = _error("An error mapped from the gRPC status.", schema)
    return responses


_ERROR_COMPONENTS = {
    ERROR_SCHEMA: {
        "type": "object",
        "description": "A failed call: the google.rpc.Status in JSON, with its rich details.",
        "properties": {
            "code": {"type": "integer", "description": "The gRPC status code number."},
            "status": {"type": "string", "description": "The gRPC status code name, for example INVALID_ARGUMENT."},
            "message": {"type": "string"},
            "details": {
                "type": "array",
                "items": {"type": "object", "additionalProperties": True},
                "description": "ErrorInfo, BadRequest (field violations) and RetryInfo, each with @type.",
            },
        },
    },
    OPENAI_ERROR_SCHEMA: {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": "string", "nullable": True},
                    "code": {"type": "string", "nullable": True},
                },
            }
        },
    },
}


def _openai(summary: str, body: dict, response: dict, tag: str = "OpenAI") -> dict:
    operation = {
        "tags": [tag],
        "summary": summary,
        "responses": {
            "200": response,
            **(
                _error_responses(None, OPENAI_ERROR_SCHEMA)
                if body
                else {"default": _error("OpenAI-style error", OPENAI_ERROR_SCHEMA)}
            ),
        },
    }
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return operation


_CHAT_BODY = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "model": {"type": "string"},
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
                    "content": {"type": "string"},
                },
            },
        },
        "stream": {"type": "boolean"},
        "temperature": {"type": "number"},
        "top_p": {"type": "number"},
        "max_tokens": {"type": "integer"},
        "seed": {"type": "integer"},
        "stop": {"type": "array", "items": {"type": "string"}},
    },
}

EXTRA_PATHS = {
    "/v1/chat/completions": {
        "post": {
            **_openai(
                "Chat completion (OpenAI-compatible), streamed as chat.completion.chunk events when stream is true",
                _CHAT_BODY,
                {
                    "description": "A chat.completion object, or SSE chunks ending with data: [DONE]",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
            ),
            "operationId": "OpenAI_CreateChatCompletion",
        }
    },
    "/v1/audio/speech": {
        "post": {
            **_openai(
                "Speech from text (OpenAI-compatible): the audio bytes",
                {
                    "type": "object",
                    "required": ["input"],
                    "properties": {
                        "model": {"type": "string"},
                        "input": {"type": "string"},
                        "voice": {"type": "string"},
                        "response_format": {"type": "string", "enum": ["wav", "pcm", "mp3", "flac", "opus", "ogg"]},
                        "speed": {"type": "number"},
                    },
                },
                {
                    "description": "The audio",
                    "content": {
                        f"audio/{t}": {"schema": {"type": "string", "format": "binary"}}
                        for t in ("wav", "mpeg", "flac", "ogg", "pcm")
                    },
                },
            ),
            "operationId": "OpenAI_CreateSpeech",
        }
    },
    "/v1/images/generations": {
        "post": {
            **_openai(
                "Images from a prompt (OpenAI-compatible)",
                {
                    "type": "object",
                    "required": ["prompt"],
                    "properties": {
                        "model": {"type": "string"},
                        "prompt": {"type": "string"},
                        "n": {"type": "integer"},
                        "size": {"type": "string"},
                        "response_format": {"type": "string", "enum": ["b64_json", "url"]},
                        "seed": {"type": "integer"},
                        "steps": {"type": "integer"},
                    },
                },
                {"description": "The images", "content": {"application/json": {"schema": {"type": "object"}}}},
            ),
            "operationId": "OpenAI_CreateImage",
        }
    },
    "/v1/models": {
        "get": {
            **_openai(
                "The models served (OpenAI-compatible)",
                {},
                {"description": "A list of models", "content": {"application/json": {"schema": {"type": "object"}}}},
            ),
            "operationId": "OpenAI_ListModels",
        }
    },
    "/v1/files": {
        "post": {
            "operationId": "Files_Upload",
            "tags": ["FileService"],
            "summary": "Upload a file",
            "description": "multipart/form-data with a `file` part (optional `name`, `ttl_seconds`, `labels` as a "
            "JSON object), or the raw bytes as the body (name from `?name=` or X-File-Name).",
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                "name": {"type": "string", "maxLength": 255},
                                "ttl_seconds": {"type": "number", "minimum": 0, "maximum": MAX_TTL_S},
                                "labels": {"type": "string"},
                            },
                        }
                    },
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "responses": {
                "201": {
                    "description": "The stored file",
                    "content": {"application/json": {"schema": _ref("capmesh.gateway.v1.UploadFileResponse")}},
                },
                **_error_responses(None),
            },
        }
    },
    "/healthz": {
        "get": {
            "operationId": "Ops_Healthz",
            "security": [],  # probes hold no key
            "tags": ["Health"],
            "summary": "The process lives",
            "responses": {"200": {"description": "ok"}},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "Ops_Readyz",
            "security": [],  # probes hold no key
            "tags": ["Health"],
            "summary": "The gateway's own dependencies answer (gRPC port, Redis when configured)",
            "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
        }
    },
    "/metrics": {
        "get": {
            "operationId": "Ops_Metrics",
            "tags": ["Health"],
            "summary": "Prometheus metrics",
            "responses": {
                "200": {
                    "description": "text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
}

_DOWNLOAD = "/v1/files/{file_id}:download"


@cache
def openapi_document(*, keys_required: bool = False) -> dict:
    """The document; `keys_required` when the gateway refuses calls without an API key."""
    comments = proto_comments()
    schemas = _Schemas(comments)
    paths: dict[str, dict] = {}
    seen_ids: set[str] = set()
    for binding in load_bindings():
        path = binding.template.openapi_path()
        operation_id = f"{binding.service.rsplit('.', 1)[-1]}_{binding.method.name}"
        while operation_id in seen_ids:
            operation_id += "_"
        seen_ids.add(operation_id)
        paths.setdefault(path, {})[binding.http_method.lower()] = _operation(binding, schemas, comments, operation_id)
    # The download route answers raw bytes with Range support, not the stream of chunks.
    download = paths[_DOWNLOAD]["get"]
    download["description"] = (
        "The file's bytes with its Content-Type; send `Range: bytes=first-last` for a part "
        "(206 with Content-Range, 416 when outside the file).\n\ngRPC: "
        "`/capmesh.gateway.v1.FileService/DownloadFile`"
    )
    any_bytes = {"*/*": {"schema": {"type": "string", "format": "binary"}}}  # the file's own Content-Type
    download["responses"] = {
        "200": {"description": "The whole file", "content": any_bytes},
        "206": {"description": "The requested range", "content": any_bytes},
        "416": _error("The range is outside the file (Content-Range: bytes */size)."),
        **_error_responses(None),
    }
    del download["responses"]["413"]  # a GET has no body
    # The route reads Range, not the gRPC request's offset and length.
    download["parameters"] = [p for p in download["parameters"] if p["in"] == "path"]
    download["parameters"].append(
        {
            "name": "Range",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "pattern": r"^bytes=[0-9]*-[0-9]*$"},
        }
    )
    schemas.ref(_upload_response_descriptor())
    for path, item in EXTRA_PATHS.items():
        paths.setdefault(path, {}).update(item)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "capmesh gateway HTTP API",
            "version": __version__,
            "description": (
                "The gateway's gRPC APIs over HTTP/JSON (proto3 JSON mapping), transcoded from the google.api.http "
                "annotations; server-streaming RPCs answer Server-Sent Events. When API keys are configured, send "
                "`Authorization: Bearer <key>`."
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {**dict(sorted(schemas.components.items())), **_ERROR_COMPONENTS},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # Without keys configured, a key is optional (sent or not, calls are served).
        "security": [{"bearer": []}] if keys_required else [{}, {"bearer": []}],
    }


def _upload_response_descriptor() -> descriptor.Descriptor:
    from capmesh.gateway.v1 import file_service_pb2

    return file_service_pb2.UploadFileResponse.DESCRIPTOR
