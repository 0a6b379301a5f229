"""A job's streamed outputs become stored files, and the result's Artifacts then name those files."""

from __future__ import annotations

from capmesh.common.v1 import artifact_pb2
from capmesh.gateway.server.files.store import FileStore
from capmesh.gateway.server.jobs.artifacts import ArtifactCollector
from capmesh.imagegen.v1 import imagegen_service_pb2
from capmesh.tts.v1 import tts_service_pb2

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def test_each_image_is_stored_and_its_artifact_gets_the_file_id(tmp_path):
    store = FileStore(tmp_path / "files")
    collector = ArtifactCollector(store, "job-1", ttl_s=60)
    images = {0: PNG_MAGIC + b"first", 1: PNG_MAGIC + b"second image"}
    for index, data in images.items():
        await collector.add(artifact_pb2.DataChunk(data=data[:5], offset=0, index=index))
        await collector.add(artifact_pb2.DataChunk(data=data[5:], offset=5, index=index))
    result = imagegen_service_pb2.ImagesResult(
        images=[
            imagegen_service_pb2.GeneratedImage(
                index=index, artifact=artifact_pb2.Artifact(mime_type="image/png", size_bytes=len(data))
            )
            for index, data in images.items()
        ]
    )

    stored = await collector.commit(result)

    assert [a.name for a in stored] == ["job-1.png", "job-1-1.png"]
    for image, artifact in zip(result.images, stored):
        assert image.artifact == artifact and artifact.file_id and artifact.mime_type == "image/png"
        assert await store.read_all(artifact.file_id) == images[image.index]


async def test_a_scene_result_nested_artifact_gets_the_file_and_its_declared_type(tmp_path):
    collector = ArtifactCollector(FileStore(tmp_path / "files"), "job-2", ttl_s=60)
    await collector.add(artifact_pb2.DataChunk(data=bytes(range(256)), offset=0, part_index=3))
    result = tts_service_pb2.SceneResult(
        audio=tts_service_pb2.SynthesisResult(
            artifact=artifact_pb2.Artifact(mime_type="audio/x-custom", size_bytes=256)
        )
    )

    [stored] = await collector.commit(result)

    assert result.audio.artifact == stored and stored.size_bytes == 256
    assert stored.mime_type == "audio/x-custom", "undetectable bytes keep the type the result declares"
