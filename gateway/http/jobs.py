"""Jobs over HTTP: the conveniences on top of the annotated JobService and Operations routes.

- `POST /v1/jobs` answers 202 with the job's operation and a `Location` to poll;
- its `request` may omit `@type`: the method's input type is filled in;
- `GET /v1/jobs/{job_id}/events` resumes after the `Last-Event-ID` header (see annotated_routes.RESUMABLE);
- the same path upgraded to a WebSocket (`job_events_socket`) sends the same events, one JSON text
  frame each (the SSE `data`), resuming after `Last-Event-ID` or `?after=EVENT_ID`, and closes with
  1000 when the job has ended;
- `/v1/jobs:events` as a WebSocket (`jobs_events_socket`) follows many jobs on one socket: those in
  `?ids=a,b` and those the page asks for later with `{"subscribe": "JOB_ID", "after": "EVENT_ID"}`
  (`{"unsubscribe": "JOB_ID"}` stops one). Each event frame is the single-job frame (its `event`
  names its `jobId`); `{"jobId": ..., "end": true}` says a job's events are over, `{"jobId": ...,
  "error": {...}}` that following it failed (an unknown id: NOT_FOUND).
  A failure of a single-job socket is one `{"error": {...}}` frame (the HTTP error body), then close
  code 4000 + the HTTP status (4404 for an unknown job); a refused key closes before the upgrade (403).
- get, list (`?filter=labels.characterId="char_001"` passes through), cancel and delete are the
  google.longrunning.Operations annotations: `/v1/operations...`.

`annotated_routes` lists the two conveniences in its hook tables; `app` routes the two sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import grpc
from google.protobuf.message import Message
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from capmesh.gateway.server.auth.guard import CALLER, Caller
from capmesh.gateway.server.http.bindings import Binding, load_bindings, method_descriptor
from capmesh.gateway.server.http.calls import forwarded_metadata
from capmesh.gateway.server.http.context import context_of
from capmesh.gateway.server.http.errors import from_rpc_error
from capmesh.gateway.server.http.json_codec import render_response
from capmesh.gateway.v1 import job_service_pb2
from capmesh.services.runtime.errors import CapmeshError, Unauthenticated

SUBMIT_JOB = "capmesh.gateway.v1.JobService.SubmitJob"
WATCH_JOB = "capmesh.gateway.v1.JobService.WatchJob"
MAX_SUBSCRIPTIONS = 256  # jobs one socket may follow at once
TYPE_URL_PREFIX = "type.googleapis.com/"


def infer_request_type(payload: object) -> object:
    if not isinstance(payload, dict):
        return payload
    inner = payload.get("request")
    method = payload.get("method")
    if isinstance(inner, dict) and "@type" not in inner and isinstance(method, str):
        try:
            input_type = method_descriptor(method).input_type.full_name
        except KeyError:
            return payload  # the job service answers NOT_FOUND / INVALID_ARGUMENT for it
        return {**payload, "request": {"@type": TYPE_URL_PREFIX + input_type, **inner}}
    return payload


def locate_operation(reply: Message, response: Response) -> None:
    name = reply.operation.name
    if name:
        response.headers["Location"] = f"/v1/{name}"


# -- job events over WebSocket ------------------------------------------------------------------


def _watch_binding() -> Binding:
    return next(b for b in load_bindings() if b.full_name == WATCH_JOB)


async def _admitted(websocket: WebSocket) -> contextlib.AbstractAsyncContextManager[None] | None:
    """The key check the HTTP middleware makes (it sees only HTTP requests): None when refused,
    after closing the socket before the upgrade (the client gets 403); else the quota admission
    to hold for the socket's life."""
    guard = getattr(websocket.app.state, "guard", None)
    if guard is None or not guard.enforcing:
        return contextlib.nullcontext()
    principal = guard.authenticate(dict(websocket.headers))
    if isinstance(principal, Unauthenticated):
        await websocket.close(code=1008, reason="a valid API key is required")
        return None
    try:
        admission = await guard.quotas.admit(principal)
    except CapmeshError as error:
        await websocket.close(code=1013, reason=str(error)[:120])
        return None
    CALLER.set(Caller(principal, guard))  # this socket's task: the calls below check roles with it

    @contextlib.asynccontextmanager
    async def held() -> AsyncIterator[None]:
        try:
            yield
        finally:
            await admission.release()

    return held()


async def _events(websocket: WebSocket, binding: Binding, job_id: str, after: str) -> AsyncIterator[str]:
    """The job's events from after `after`, each as the JSON text of its SSE `data`, to the job's end."""
    request = job_service_pb2.WatchJobRequest(job_id=job_id, after_event_id=after)
    calls = context_of(websocket).calls  # type: ignore[arg-type]  # a WebSocket is an HTTPConnection too
    stream = calls.stream(
        binding.grpc_path, request.SerializeToString(), metadata=forwarded_metadata(websocket.headers)
    )
    async with contextlib.aclosing(stream):
        async for raw in stream:
            yield json.dumps(render_response(binding, binding.output_class.FromString(raw)), separators=(",", ":"))


async def job_events_socket(websocket: WebSocket) -> None:
    """`GET /v1/jobs/{job_id}/events` upgraded to a WebSocket (see the module's docstring)."""
    admission = await _admitted(websocket)
    if admission is None:
        return
    async with admission:
        await websocket.accept()
        after = websocket.headers.get("last-event-id") or websocket.query_params.get("after", "")
        try:
            async for frame in _events(websocket, _watch_binding(), websocket.path_params["job_id"], after):
                await websocket.send_text(frame)
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
            await websocket.send_text(json.dumps({"error": error.body()}))
            await websocket.close(code=4000 + error.http_status)
            return
        except WebSocketDisconnect:
            return  # the client left: closing the stream above cancelled the watch
        await websocket.close(code=1000)


class _Follower:
    """The jobs one multi-job socket follows: a task per job feeding one outbox, one sender."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.binding = _watch_binding()
        self.outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=1024)
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def subscribe(self, job_id: str, after: str) -> None:
        if not job_id or job_id in self.tasks:
            return
        if len(self.tasks) >= MAX_SUBSCRIPTIONS:
            self.outbox.put_nowait(json.dumps({"jobId": job_id, "error": {"message": "too many jobs on one socket"}}))
            return
        task = asyncio.get_running_loop().create_task(self._follow(job_id, after))
        self.tasks[job_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(job_id, None))

    def unsubscribe(self, job_id: str) -> None:
        task = self.tasks.get(job_id)
        if task is not None:
            task.cancel()

    async def _follow(self, job_id: str, after: str) -> None:
        try:
            async for frame in _events(self.websocket, self.binding, job_id, after):
                await self.outbox.put(frame)  # a slow reader slows the watches, never grows memory
            await self.outbox.put(json.dumps({"jobId": job_id, "end": True}))
        except grpc.aio.AioRpcError as exc:
            await self.outbox.put(json.dumps({"jobId": job_id, "error": from_rpc_error(exc).body()}))

    async def send_forever(self) -> None:
        while True:
            await self.websocket.send_text(await self.outbox.get())

    async def receive_forever(self) -> None:
        """Client messages until it closes; a message that is not a subscription is answered, not fatal."""
        while True:
            text = await self.websocket.receive_text()
            try:
                message = json.loads(text)
                if not isinstance(message, dict):
                    raise ValueError
                if "subscribe" in message:
                    self.subscribe(str(message["subscribe"]), str(message.get("after", "")))
                elif "unsubscribe" in message:
                    self.unsubscribe(str(message["unsubscribe"]))
                else:
                    raise ValueError
            except ValueError:
                await self.outbox.put(
                    json.dumps(
                        {
                            "error": {
                                "message": 'send {"subscribe": JOB_ID, "after": EVENT_ID} or {"unsubscribe": JOB_ID}'
                            }
                        }
                    )
                )

    async def close(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def jobs_events_socket(websocket: WebSocket) -> None:
    """`/v1/jobs:events` as a WebSocket: many jobs' events on one socket (see the module's docstring)."""
    admission = await _admitted(websocket)
    if admission is None:
        return
    async with admission:
        await websocket.accept()
        follower = _Follower(websocket)
        for job_id in websocket.query_params.get("ids", "").split(","):
            follower.subscribe(job_id.strip(), "")
        sender = asyncio.ensure_future(follower.send_forever())
        receiver = asyncio.ensure_future(follower.receive_forever())
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)
            await follower.close()
