"""The proto comments, for OpenAPI descriptions.

The generated modules carry no source info, so the protos are compiled once more with
`--include_source_info` (grpcio-tools, in memory) and each element's leading comment is mapped to
its full name: messages and fields (`pkg.Msg.field`), enums and values, services and methods.
Without the protos (an installed wheel) the document simply has no descriptions.
"""

from __future__ import annotations

import shutil
import tempfile
from functools import cache
from pathlib import Path

import structlog
from google.protobuf import descriptor_pb2

log = structlog.get_logger("capmesh.gateway.http")

PROTOS = Path(__file__).resolve().parents[2] / "protos"

# FileDescriptorProto field numbers used in source-info paths.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _NESTED_ENUM = 2, 3, 4
_ENUM_VALUE, _METHOD = 2, 2


def _compile(proto_root: Path) -> descriptor_pb2.FileDescriptorSet | None:
    try:
        import grpc_tools
        from google.api import annotations_pb2
        from grpc_tools import protoc
    except ImportError:
        return None
    google_root = Path(annotations_pb2.__file__).resolve().parent.parent
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    sources = sorted(p.relative_to(proto_root).as_posix() for p in proto_root.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "deps"
        # googleapis-common-protos ships google/longrunning/operations.proto as operations_proto.proto.
        (staged / "google" / "longrunning").mkdir(parents=True)
        shutil.copyfile(
            google_root / "longrunning" / "operations_proto.proto",
            staged / "google" / "longrunning" / "operations.proto",
        )
        out = Path(tmp) / "set.pb"
        args = [
            "protoc",
            f"-I{proto_root}",
            f"-I{staged}",
            f"-I{google_root.parent}",
            f"-I{well_known}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *sources,
            "google/longrunning/operations.proto",
        ]
        if protoc.main(args) != 0:
            return None
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _clean(text: str) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


@cache
def proto_comments(proto_root: Path = PROTOS) -> dict[str, str]:
    if not proto_root.is_dir():
        return {}
    try:
        files = _compile(proto_root)
    except Exception as exc:  # descriptions are optional; the API document must still be served
        log.warning("openapi.comments_unavailable", error=str(exc))
        return {}
    comments: dict[str, str] = {}
    for file in files.file if files else ():
        names = _names_by_path(file)
        for location in file.source_code_info.location:
            name = names.get(tuple(location.path))
            if name and location.leading_comments:
                comments[name] = _clean(location.leading_comments)
    return comments


def _names_by_path(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    names: dict[tuple[int, ...], str] = {}
    package = file.package

    def add_enum(enum, path, prefix):
        full = f"{prefix}.{enum.name}"
        names[path] = full
        for index, value in enumerate(enum.value):
            names[(*path, _ENUM_VALUE, index)] = f"{full}.{value.name}"

    def add_message(message, path, prefix):
        full = f"{prefix}.{message.name}"
        names[path] = full
        for index, field in enumerate(message.field):
            names[(*path, _FIELD, index)] = f"{full}.{field.name}"
        for index, nested in enumerate(message.nested_type):
            add_message(nested, (*path, _NESTED, index), full)
        for index, enum in enumerate(message.enum_type):
            add_enum(enum, (*path, _NESTED_ENUM, index), full)

    for index, message in enumerate(file.message_type):
        add_message(message, (_MESSAGE, index), package)
    for index, enum in enumerate(file.enum_type):
        add_enum(enum, (_ENUM, index), package)
    for index, service in enumerate(file.service):
        full = f"{package}.{service.name}"
        names[(_SERVICE, index)] = full
        for method_index, method in enumerate(service.method):
            names[(_SERVICE, index, _METHOD, method_index)] = f"{full}.{method.name}"
    return names
