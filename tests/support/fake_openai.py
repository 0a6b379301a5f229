"""A real local HTTP server that answers like an OpenAI-compatible API, for remote-engine tests.

Tests register a handler per path and can queue scripted failures in front of it:

    with FakeOpenAI() as api:
        api.route("/v1/chat/completions", handle_chat)     # handle_chat(request) -> Reply
        api.fail_next("/v1/chat/completions", Reply.json(500, {"error": {"message": "boom"}}))
        api.fail_next("/v1/chat/completions", Reply.drop())  # closes the connection, no answer
        ... engine pointed at api.base_url ...
        assert api.calls("/v1/chat/completions") == 3

A handler gets a `FakeRequest` (path, headers, parsed JSON body) and returns a `Reply`: JSON, raw
bytes, or an iterator of byte chunks sent as they are produced (for SSE streams).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeRequest:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""
    drop_connection: bool = False

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode())

    @classmethod
    def raw(cls, body: bytes, content_type: str, status: int = 200) -> Reply:
        return cls(status, {"Content-Type": content_type}, body)

    @classmethod
    def sse(cls, events: Iterable[Any]) -> Reply:
        """Streams each event as `data: <json>` and ends with `data: [DONE]`."""

        def chunks():
            for event in events:
                yield f"data: {json.dumps(event)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return cls(200, {"Content-Type": "text/event-stream"}, chunks())

    @classmethod
    def drop(cls) -> Reply:
        return cls(drop_connection=True)


Handler = Callable[[FakeRequest], Reply]


class FakeOpenAI:
    def __init__(self) -> None:
        self._routes: dict[str, Handler] = {}
        self._scripted: dict[str, deque[Reply]] = defaultdict(deque)
        self._calls: dict[str, list[FakeRequest]] = defaultdict(list)
        self._lock = threading.Lock()
        owner = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                self._serve(None)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    body = raw
                self._serve(body)

            def _serve(self, body):
                path = self.path.split("?", 1)[0]
                request = FakeRequest(path, {k.lower(): v for k, v in self.headers.items()}, body)
                reply = owner._reply_for(request)
                if reply.drop_connection:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                streaming = not isinstance(reply.body, (bytes, bytearray))
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if streaming:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    try:
                        for chunk in reply.body:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.wfile.flush()
                        self.wfile.write(b"0\r\n\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                else:
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def route(self, path: str, handler: Handler) -> None:
        self._routes[path] = handler

    def fail_next(self, path: str, reply: Reply) -> None:
        with self._lock:
            self._scripted[path].append(reply)

    def calls(self, path: str) -> int:
        return len(self._calls[path])

    def requests(self, path: str) -> list[FakeRequest]:
        return list(self._calls[path])

    def _reply_for(self, request: FakeRequest) -> Reply:
        with self._lock:
            self._calls[request.path].append(request)
            if self._scripted[request.path]:
                return self._scripted[request.path].popleft()
        handler = self._routes.get(request.path)
        if handler is None:
            return Reply.json(404, {"error": {"message": f"no route {request.path}", "type": "not_found"}})
        return handler(request)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
