"""Files over HTTP, on the gateway's FileStore.

- `POST /v1/files`: multipart/form-data (a `file` part; optional `name`, `ttl_seconds` and
  `labels` (a JSON object) parts) or any other body taken as the raw file (name from `?name=` or
  `X-File-Name`, type from Content-Type). The answer is 201 with the stored file's description.
- `GET|HEAD /v1/files/{file_id}:download`: the bytes with Content-Type, Content-Length,
  Content-Disposition and Range support (206 + Content-Range; 416 when unsatisfiable).

Unlike the other routes these do not call the gRPC methods in-process: the bytes go straight
between the socket and the store (the one the FileService serves), so that a large file is not
wrapped into and out of a protobuf message per network chunk. What the methods would check still
holds: the role table (`role_error` of UploadFile / DownloadFile), the store's limits and errors.
Body chunks are handed to the upload as they arrive (it batches them for its writer thread);
downloads are sent in pieces of `PIECE_BYTES`, each read ahead in a worker thread while the one
before is sent (ASGI has no sendfile).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from urllib.parse import quote

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from capmesh.gateway.server.auth.guard import role_error
from capmesh.gateway.server.files.index import FileInfo
from capmesh.gateway.server.files.service import ttl_problem
from capmesh.gateway.server.files.store import FileStore
from capmesh.gateway.server.http.context import body_too_large, context_of, error_response, mark_route
from capmesh.gateway.server.http.errors import HttpError, invalid_field, make_error
from capmesh.gateway.server.http.json_codec import render
from capmesh.gateway.v1 import file_service_pb2
from capmesh.services.runtime.errors import CapmeshError
from capmesh.services.runtime.status import to_status_proto

UPLOAD = "/capmesh.gateway.v1.FileService/UploadFile"
DOWNLOAD = "/capmesh.gateway.v1.FileService/DownloadFile"
MiB = 1024 * 1024
CHUNK_BYTES = MiB  # a multipart part is read this much at a time
PIECE_BYTES = MiB  # a download's unit of reading and sending (measured: 4 MiB was slower)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _http_error(error: CapmeshError) -> HttpError:
    return HttpError(to_status_proto(error))


async def upload(request: Request) -> Response:
    mark_route(request, "/v1/files:upload")
    context = context_of(request)
    limit = context.settings.max_file_bytes
    denied = role_error(UPLOAD)
    if denied is not None:
        return error_response(_http_error(denied))
    try:
        header, body = await _upload_parts(request, limit)
        await body.require_content()
        info = await _store(context.file_store, header, body)
    except HttpError as error:
        return error_response(error)
    except CapmeshError as error:
        return error_response(_http_error(error))
    reply = file_service_pb2.UploadFileResponse(file=info)
    return JSONResponse(render(reply), status_code=201, headers={"Location": f"/v1/files/{info.file_id}"})


async def _store(store: FileStore, header: file_service_pb2.UploadHeader, body: _LimitedBody) -> FileInfo:
    """The body into the store as one upload; nothing is left behind when it fails midway."""
    upload = store.open_upload(header.name, header.mime_type, header.ttl_seconds, dict(header.labels))
    try:
        async for chunk in body:
            await upload.write(chunk)
        return await upload.commit()
    except BaseException:
        await upload.abort()
        raise


async def _upload_parts(request: Request, limit: int):
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise body_too_large(limit)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await _multipart(request, limit)
    header = file_service_pb2.UploadHeader(
        name=request.query_params.get("name") or request.headers.get("x-file-name", "upload"),
        mime_type=content_type.split(";")[0].strip() or "application/octet-stream",
    )
    _set_ttl(header, request.query_params.get("ttl_seconds"))
    return header, _LimitedBody(request.stream(), limit, "body")


async def _multipart(request: Request, limit: int):
    try:
        form = await request.form(max_part_size=limit)
    except HTTPException as exc:  # what starlette raises for a malformed multipart body
        raise invalid_field("body", f"is not a valid multipart/form-data body: {exc.detail}") from None
    part = form.get("file")
    if not isinstance(part, UploadFile):
        raise invalid_field("file", "a multipart upload needs a 'file' part with the content")
    header = file_service_pb2.UploadHeader(
        name=str(form.get("name") or part.filename or "upload"),
        mime_type=(part.content_type or "application/octet-stream"),
    )
    _set_ttl(header, form.get("ttl_seconds"))
    labels = form.get("labels")
    if labels:
        try:
            parsed = json.loads(str(labels))
            if not isinstance(parsed, dict):
                raise ValueError("not an object")
            header.labels.update({str(k): str(v) for k, v in parsed.items()})
        except ValueError:
            raise invalid_field("labels", "must be a JSON object of strings") from None

    async def read() -> AsyncIterator[bytes]:
        try:
            while chunk := await part.read(CHUNK_BYTES):
                yield chunk
        finally:
            await form.close()

    return header, _LimitedBody(read(), limit, "file")


def _set_ttl(header: file_service_pb2.UploadHeader, value: object) -> None:
    if value in (None, ""):
        return
    try:
        ttl_s = float(str(value))
    except ValueError:
        raise invalid_field("ttl_seconds", f"must be a number of seconds, not {value!r}") from None
    problem = ttl_problem(ttl_s)
    if problem:
        raise invalid_field("ttl_seconds", problem)
    header.ttl_seconds = ttl_s


class _LimitedBody:
    """The upload's bytes, refused with 413 past `limit`; `field` names the part that carries them
    (`body`, or the multipart `file`)."""

    def __init__(self, chunks: AsyncIterator[bytes], limit: int, field: str) -> None:
        self._chunks = chunks
        self._limit = limit
        self._field = field
        self._first = b""

    async def require_content(self) -> None:
        """Reads up to the first byte, so that an upload with no content is refused (400) before
        the upload starts rather than stored as an empty file."""
        while not self._first:
            chunk = await anext(self._chunks, None)
            if chunk is None:
                raise invalid_field(self._field, "the upload has no content; send the file's bytes")
            self._first = chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        pending = [self._first] if self._first else []
        while True:
            chunk = pending.pop() if pending else await anext(self._chunks, None)
            if chunk is None:
                return
            size += len(chunk)
            if size > self._limit:
                raise body_too_large(self._limit)
            yield chunk


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """`bytes=a-b` -> (first, last) inclusive, clipped to the size; None when unsatisfiable.

    Only single ranges are served; a multi-range request gets the first range."""
    found = _RANGE.match(value.split(",")[0].strip())
    if not found or (not found.group(1) and not found.group(2)):
        return None
    start_text, end_text = found.groups()
    if not start_text:
        suffix = int(end_text)
        if suffix == 0 or size == 0:
            return None
        return max(0, size - suffix), size - 1
    start = int(start_text)
    end = int(end_text) if end_text else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


async def download(request: Request) -> Response:
    mark_route(request, "/v1/files/{file_id}:download")
    context = context_of(request)
    file_id = request.path_params["file_id"]
    try:
        denied = role_error(DOWNLOAD)
        if denied is not None:
            raise denied
        # Asked before the status line: a missing or expired file is a 404, never a cut-off 200.
        info = await context.file_store.stat(file_id)
    except CapmeshError as error:
        return error_response(_http_error(error))
    size = info.size_bytes
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(info.name or file_id)}",
        "ETag": f'"{info.sha256}"' if info.sha256 else "",
    }
    headers = {k: v for k, v in headers.items() if v}
    media_type = info.mime_type or "application/octet-stream"
    status, first, last = 200, 0, size - 1
    range_header = request.headers.get("range")
    if range_header and request.headers.get("if-range", headers.get("ETag")) == headers.get("ETag"):
        chosen = parse_range(range_header, size)
        if chosen is None:
            return error_response(
                make_error(
                    "OUT_OF_RANGE",
                    f"range {range_header!r} is outside the file's {size} bytes",
                    reason="RANGE_NOT_SATISFIABLE",
                    http_status=416,
                    headers={"Content-Range": f"bytes */{size}"},
                )
            )
        status, (first, last) = 206, chosen
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    length = max(0, last - first + 1)
    headers["Content-Length"] = str(length)
    if request.method == "HEAD" or length == 0:
        return Response(b"", status_code=status, headers=headers, media_type=media_type)
    try:
        _, pieces = await context.file_store.read(file_id, first, length, chunk_bytes=PIECE_BYTES)
    except CapmeshError as error:
        return error_response(_http_error(error))

    async def body() -> AsyncIterator[bytes]:
        try:
            async for _, piece in pieces:
                yield piece
        finally:
            await pieces.aclose()

    return StreamingResponse(body(), status_code=status, headers=headers, media_type=media_type)
