"""The gateway's HTTP side: JSON/SSE transcoding of the annotated gRPC APIs, OpenAI-compatible
endpoints, files and jobs over HTTP, operations endpoints and the web console.

Like grpc-gateway it is a reverse proxy onto the gateway's own gRPC port, so HTTP and gRPC
cannot drift apart. `build_http_app(gateway)` (in `app`) is the entry point.
"""
