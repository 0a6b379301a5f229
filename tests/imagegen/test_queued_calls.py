"""Sync calls wait their turn: three concurrent ImageGen calls through the gateway on one tiny backend
that runs one call at a time (`capmesh up --only imagegen`, real processes).

The gateway sends calls beyond the backend's max_concurrency into the backend's own line (its
max_queue, which it registered), where each waiting call sees `queued` progress with its
queue_position; all three succeed.
"""

from __future__ import annotations

import asyncio
import os

import grpc
import pytest

from capmesh.imagegen.v1 import imagegen_service_pb2 as pb
from capmesh.imagegen.v1 import imagegen_service_pb2_grpc as pb_grpc
from tests.support.processes import capmesh_up

pytestmark = pytest.mark.e2e

CALLS = 3


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> str:
    env = {**os.environ, "CAPMESH_IMAGEGEN_MAX_CONCURRENCY": "1", "CAPMESH_IMAGEGEN_MAX_QUEUE": "4"}
    with capmesh_up(["--only", "imagegen"], tmp_path_factory.mktemp("imagegen-logs"), env) as table:
        yield table["gateway (gRPC)"]


async def generate(stub: pb_grpc.ImageGenServiceStub, seed: int) -> tuple[list[int], int]:
    """Queue positions the call saw, and the number of images it got."""
    positions: list[int] = []
    images = 0
    request = pb.StreamGenerateImagesRequest(prompt="a lighthouse", steps=4, width=64, height=64, seed=seed)
    async for message in stub.StreamGenerateImages(request, timeout=300):
        if message.HasField("progress") and message.progress.stage == "queued":
            positions.append(message.progress.queue_position)
        if message.HasField("result"):
            images = len(message.result.images)
    return positions, images


async def test_three_calls_on_one_slot_all_succeed_and_the_waiting_ones_see_their_place(gateway):
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = pb_grpc.ImageGenServiceStub(channel)
        outcomes = await asyncio.gather(*(generate(stub, seed) for seed in range(CALLS)))
    assert [images for _, images in outcomes] == [1] * CALLS
    seen = sorted(positions for positions, _ in outcomes)
    # One call ran at once; the others waited in line and saw their place come down to 1.
    assert seen[0] == [] and all(positions and positions[-1] == 1 for positions in seen[1:]), seen
