"""The gateway's HTTP side: JSON/SSE transcoding of the annotated gRPC APIs, OpenAI-compatible
endpoints, files and jobs over HTTP, operations endpoints and the web console.

Like grpc-gateway it serves HTTP from the gRPC contracts, so HTTP and gRPC cannot drift apart; unlike
it, the calls run in-process (`calls.GatewayCalls`): capability calls through the router, the
gateway's own services on the handlers its gRPC server runs, and file bytes straight to and from
the file store (`files`). `build_http_app` (in `app`) is the entry point.
"""
