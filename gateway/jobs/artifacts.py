"""Collects the `chunk` bytes of a job's stream into files of the file store, one per output.

Every media stream sends its bytes as `capmesh.common.v1.DataChunk` messages, whose `index` names
the output (the image of an ImageGen call; 0 where a call has one output), and its result
describes each output with a `capmesh.common.v1.Artifact`. Once the job's result arrives, each
stored file's id, size and digest are written into that Artifact, so the job's response says
where its outputs are.
"""

from __future__ import annotations

from google.protobuf.message import Message

from capmesh.common.v1 import artifact_pb2
from capmesh.gateway.server.files.detect import OCTET_STREAM
from capmesh.gateway.server.files.store import FileStore, Upload

_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "audio/wav": "wav",
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
    "audio/flac": "flac",
    "video/mp4": "mp4",
    "application/json": "json",
}


def output_artifacts(result: Message) -> dict[int, artifact_pb2.Artifact]:
    """The Artifact of each output that `result` describes, by output index (the chunks' `index`).

    An Artifact field of a message that has an `index` (ImageGen's GeneratedImage) belongs to that
    output; any other (TTS, VideoGen, TalkingHead) to output 0. Nested results (a TTS scene's
    `audio`) are searched too.
    """
    found: dict[int, artifact_pb2.Artifact] = {}
    for field, value in result.ListFields():
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        for item in [value] if isinstance(value, Message) else value:  # else a repeated field
            if isinstance(item, artifact_pb2.Artifact):
                found[getattr(result, "index", 0)] = item
            else:
                found.update(output_artifacts(item))
    return found


class ArtifactCollector:
    """DataChunk bytes are written as they arrive (never held in memory), one file per output
    index. Text deltas (LLM) make no file: the result message already holds the whole text."""

    def __init__(self, files: FileStore, job_id: str, ttl_s: float) -> None:
        self._files = files
        self._job_id = job_id
        self._ttl_s = ttl_s
        self._uploads: dict[int, Upload] = {}

    async def add(self, chunk: Message) -> None:
        if not isinstance(chunk, artifact_pb2.DataChunk) or not chunk.data:
            return
        upload = self._uploads.get(chunk.index)
        if upload is None:
            upload = self._files.open_upload(ttl_s=self._ttl_s, labels={"job_id": self._job_id})
            self._uploads[chunk.index] = upload
        await upload.write(chunk.data)

    async def commit(self, result: Message) -> list[artifact_pb2.Artifact]:
        """Stores the outputs; returns their Artifacts and fills each into `result`'s Artifact for that output.

        The stored type is the one detected from the bytes, or the result's declared one where
        detection finds nothing better than application/octet-stream.
        """
        described = output_artifacts(result)
        artifacts: list[artifact_pb2.Artifact] = []
        for index in sorted(self._uploads):
            info = await self._uploads.pop(index).commit()
            declared = described[index].mime_type if index in described else ""
            mime = declared if info.mime_type == OCTET_STREAM and declared else info.mime_type
            extension = _EXTENSIONS.get(mime, "bin")
            suffix = f"-{index}" if len(artifacts) or index else ""
            stored = artifact_pb2.Artifact(
                file_id=info.file_id,
                mime_type=mime,
                size_bytes=info.size_bytes,
                sha256=info.sha256,
                name=f"{self._job_id}{suffix}.{extension}",
            )
            if index in described:
                described[index].CopyFrom(stored)
            artifacts.append(stored)
        return artifacts

    async def abort(self) -> None:
        for upload in self._uploads.values():
            await upload.abort()
        self._uploads.clear()
