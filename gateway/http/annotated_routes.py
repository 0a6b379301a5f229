"""The catch-all HTTP handler: finds the annotated RPC for a request and runs it as a gRPC call.

Unary RPCs answer JSON; server-streaming RPCs answer SSE (or NDJSON on
`Accept: application/x-ndjson`). Per-method HTTP conventions that the annotation cannot say are
kept in the small tables below: the success status, and which stream can resume from
`Last-Event-ID` (the request field that takes it and the response field that is each event's id).
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Match, Route

from capmesh.gateway.server.http import streams
from capmesh.gateway.server.http.bindings import Binding, find_binding
from capmesh.gateway.server.http.context import (
    BridgeContext,
    context_of,
    error_response,
    mark_route,
    read_body,
)
from capmesh.gateway.server.http.errors import HttpError, from_rpc_error, make_error, message_too_large
from capmesh.gateway.server.http.jobs import SUBMIT_JOB, infer_request_type, locate_operation
from capmesh.gateway.server.http.json_codec import build_request, render_response

SUCCESS_STATUS = {SUBMIT_JOB: 202}


class Resume:
    """A stream that resumes after `Last-Event-ID`: request field and the response's id field."""

    def __init__(self, request_field: str, response_id_path: str) -> None:
        self.request_field = request_field
        self.response_id_path = response_id_path

    def event_id(self, message: Message) -> str:
        value = message
        for name in self.response_id_path.split("."):
            value = getattr(value, name)
        return str(value)


RESUMABLE = {"capmesh.gateway.v1.JobService.WatchJob": Resume("after_event_id", "event.event_id")}

# Per-method conveniences: adjust the parsed JSON body before transcoding, or the response after.
RequestHook = Callable[[object], object]
ResponseHook = Callable[[Message, Response], None]
REQUEST_HOOKS: dict[str, RequestHook] = {SUBMIT_JOB: infer_request_type}
RESPONSE_HOOKS: dict[str, ResponseHook] = {SUBMIT_JOB: locate_operation}


async def dispatch(request: Request) -> Response:
    """Any path and method: the annotated RPC it names, or a JSON 405 (with Allow) / 404."""
    binding, variables, allowed = find_binding(request.method, request.url.path)
    if binding is None:
        mark_route(request, "unmatched")
        allowed |= _hand_written_methods(request)
        if allowed:
            return error_response(
                make_error(
                    "UNIMPLEMENTED",
                    f"{request.method} is not allowed on {request.url.path}; it serves {', '.join(sorted(allowed))}",
                    reason="METHOD_NOT_ALLOWED",
                    http_status=405,
                    headers={"Allow": ", ".join(sorted(allowed))},
                )
            )
        return error_response(
            make_error("NOT_FOUND", f"no route for {request.method} {request.url.path}", reason="ROUTE_NOT_FOUND")
        )
    mark_route(request, binding.template.template)
    try:
        return await call_binding(request, binding, variables)
    except HttpError as error:
        return error_response(error)


def _hand_written_methods(request: Request) -> frozenset[str]:
    """The methods the app's own routes (OpenAI, files, ops) serve on this path: this catch-all
    takes every method, so a method they lack arrives here and must learn what they allow."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] is Match.PARTIAL:
            methods |= route.methods
    return frozenset(methods)


async def call_binding(request: Request, binding: Binding, variables: dict[str, str]) -> Response:
    context = context_of(request)
    body = await read_body(request, context.settings.max_body_bytes) if binding.body else b""
    message = build_request(
        binding, variables, request.query_params.multi_items(), body, prepare=REQUEST_HOOKS.get(binding.full_name)
    )
    size, limit = message.ByteSize(), context.settings.max_message_bytes
    if size > limit:  # refused here too for the gateway's own methods, which run in-process
        raise message_too_large(f"{size} bytes, the limit is {limit}")
    resume = RESUMABLE.get(binding.full_name)
    last_event_id = request.headers.get("last-event-id")
    if resume is not None and last_event_id:
        setattr(message, resume.request_field, last_event_id)
    if binding.server_streaming:
        return await stream_binding(request, context, binding, message, resume)
    try:
        raw = await context.calls.unary(
            binding.grpc_path, message.SerializeToString(), metadata=context.metadata(request)
        )
    except grpc.aio.AioRpcError as exc:
        return error_response(from_rpc_error(exc))
    reply = binding.output_class.FromString(raw)
    response = JSONResponse(render_response(binding, reply), status_code=SUCCESS_STATUS.get(binding.full_name, 200))
    hook = RESPONSE_HOOKS.get(binding.full_name)
    if hook is not None:
        hook(reply, response)
    return response


async def stream_binding(
    request: Request, context: BridgeContext, binding: Binding, message: Message, resume: Resume | None
) -> Response:
    call = context.calls.stream(binding.grpc_path, message.SerializeToString(), metadata=context.metadata(request))
    decode = binding.output_class.FromString
    # A capability validates and admits the call before its first message; see `streams`.
    first_message_wait_s = None if binding.capability else streams.OWN_STREAM_FIRST_MESSAGE_WAIT_S

    def event_id(reply: Message, index: int) -> str | int:
        return resume.event_id(reply) if resume is not None else index

    try:
        if streams.wants_ndjson(request.headers.get("accept", "")):
            body = await streams.start_stream(
                call,
                encode_message=lambda raw, index: streams.ndjson_line(render_response(binding, decode(raw))),
                encode_error=lambda error: streams.ndjson_line({"error": error.body()}),
                keepalive=streams.NDJSON_KEEPALIVE,
                keepalive_s=context.settings.sse_keepalive_s,
                first_message_wait_s=first_message_wait_s,
            )
            media_type = streams.NDJSON
        else:

            def encode(raw: bytes, index: int) -> bytes:
                reply = decode(raw)
                return streams.sse_event(render_response(binding, reply), event_id=event_id(reply, index))

            body = await streams.start_stream(
                call,
                encode_message=encode,
                encode_error=lambda error: streams.sse_event(error.body(), event="error"),
                keepalive=streams.SSE_KEEPALIVE,
                keepalive_s=context.settings.sse_keepalive_s,
                first_message_wait_s=first_message_wait_s,
            )
            media_type = streams.SSE
    except HttpError as error:
        return error_response(error)
    return StreamingResponse(body, media_type=media_type, headers=streams.SSE_HEADERS)
