"""Defect 7: error texts a caller can act on, through a real gateway to real TTS and VideoGen
processes: no Python object reprs, a few close voices instead of all of them, and one rule for a
malformed `file_id` (INVALID_ARGUMENT, as the file service says) versus an unknown one (NOT_FOUND)."""

from __future__ import annotations

import grpc
import pytest

from capmesh.client import from_rpc_error
from capmesh.common.v1 import artifact_pb2
from capmesh.tts.v1 import tts_service_pb2, tts_service_pb2_grpc
from capmesh.videogen.v1 import videogen_service_pb2, videogen_service_pb2_grpc
from tests.defects.support import available, service_process, wait_until


def _failure(call) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as caught:
        list(call)
    error = from_rpc_error(caught.value)
    return error.code, error.message, dict(error.field_violations)


def test_an_unknown_voice_names_a_few_close_ones_and_where_to_list_them(tts_mesh) -> None:
    with grpc.insecure_channel(tts_mesh.grpc_address) as channel:
        stub = tts_service_pb2_grpc.TtsServiceStub(channel)
        code, _, fields = _failure(
            stub.StreamSynthesize(tts_service_pb2.StreamSynthesizeRequest(text="Hi.", voice="en-usa"), timeout=30)
        )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "en-us" in fields["voice"] and "capmesh tts --voices" in fields["voice"]
    assert len(fields["voice"]) < 300  # before: ~250 voices in one message


@pytest.fixture(scope="module")
def videogen(tts_mesh):
    process = service_process("videogen", tts_mesh.grpc_address)
    try:
        wait_until(lambda: available(tts_mesh.grpc_address, "videogen"), what="videogen AVAILABLE")
        yield tts_mesh.grpc_address
    finally:
        process.kill()


def _video(address: str, image: artifact_pb2.Artifact):
    channel = grpc.insecure_channel(address)
    stub = videogen_service_pb2_grpc.VideoGenServiceStub(channel)
    request = videogen_service_pb2.StreamGenerateVideoRequest(image=image, prompt="waves", num_frames=2, steps=1)
    try:
        return _failure(stub.StreamGenerateVideo(request, timeout=120))
    finally:
        channel.close()


def test_bytes_that_are_no_image_are_described_without_python_reprs(videogen) -> None:
    code, message, fields = _video(videogen, artifact_pb2.Artifact(inline_data=b"RIFF\0\0\0\0WAVEfmt "))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    text = message + " ".join(fields.values())
    assert "BytesIO" not in text and " at 0x" not in text, text  # before: <_io.BytesIO object at 0x...>
    assert "PNG, JPEG or WebP" in text


def test_a_malformed_file_id_is_invalid_argument_everywhere_and_an_unknown_one_not_found(videogen) -> None:
    code, _, fields = _video(videogen, artifact_pb2.Artifact(file_id="not-an-id"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT  # before: NOT_FOUND here, INVALID_ARGUMENT in FileService
    assert "image.file_id" in fields and "not a valid file id" in fields["image.file_id"]
    code, _, _ = _video(videogen, artifact_pb2.Artifact(file_id="A" * 32))
    assert code == grpc.StatusCode.NOT_FOUND
