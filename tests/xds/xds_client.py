"""A proxyless gRPC client as its own process, for the xDS tests and benchmark: dials
`xds:///CAPABILITY` (GRPC_XDS_BOOTSTRAP must name the gateway) and calls the echo backend's Chat in
a loop, printing one line per call: `MONOTONIC_TIME NAME` (the backend that answered) or
`MONOTONIC_TIME !CODE`. With MODEL, each call asks for that model and names it in the metadata
that xDS routes on. Runs until stdin closes: `python -m tests.xds.xds_client CAPABILITY [MODEL]`."""

from __future__ import annotations

import sys
import threading
import time

import grpc

from capmesh.client.channel import sync_channel
from capmesh.client.xds import MODEL_HEADER
from capmesh.llm.v1 import llm_service_pb2_grpc
from tests.gateway.backends import chat_request

PACE_S = 0.005  # a steady load, not a flood: ~200 calls/s


def main() -> None:
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    model = sys.argv[2] if len(sys.argv) > 2 else ""
    request = chat_request("hello", model)
    metadata = ((MODEL_HEADER, model),) if model else ()
    with sync_channel(f"xds:///{sys.argv[1]}") as channel:
        stub = llm_service_pb2_grpc.LlmServiceStub(channel)
        while not stop.is_set():
            try:
                answer = stub.Chat(request, metadata=metadata, timeout=1, wait_for_ready=True).message.content
            except grpc.RpcError as exc:
                answer = f"!{exc.code().name}"
            print(f"{time.monotonic():.6f} {answer}", flush=True)
            stop.wait(PACE_S)


if __name__ == "__main__":
    main()
