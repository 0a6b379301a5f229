"""Collects the `chunk` bytes of a job's stream into files of the file store, one per output."""

from __future__ import annotations

from capmesh.common.v1 import artifact_pb2
from capmesh.gateway.server.files.detect import OCTET_STREAM
from capmesh.gateway.server.files.store import FileStore, Upload

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "audio/wav": "wav",
               "audio/mpeg": "mp3", "audio/ogg": "ogg", "audio/flac": "flac", "video/mp4": "mp4",
               "application/json": "json"}


class ArtifactCollector:
    """Chunks with a bytes `data` field are written as they arrive (never held in memory); chunks
    carrying an `image_index` go to one file per index. Text deltas (LLM) make no file: the
    result message already holds the whole text."""

    def __init__(self, files: FileStore, job_id: str, ttl_s: float) -> None:
        self._files = files
        self._job_id = job_id
        self._ttl_s = ttl_s
        self._uploads: dict[int, Upload] = {}

    async def add(self, chunk) -> None:
        fields = chunk.DESCRIPTOR.fields_by_name
        data_field = fields.get("data")
        if data_field is None or data_field.type != data_field.TYPE_BYTES or not chunk.data:
            return
        index = chunk.image_index if "image_index" in fields else 0
        upload = self._uploads.get(index)
        if upload is None:
            upload = self._files.open_upload(ttl_s=self._ttl_s, labels={"job_id": self._job_id})
            self._uploads[index] = upload
        await upload.write(chunk.data)

    async def commit(self, result) -> list[artifact_pb2.Artifact]:
        declared = getattr(result, "mime_type", "") if result is not None else ""
        artifacts = []
        for index in sorted(self._uploads):
            info = await self._uploads.pop(index).commit()
            mime = declared if info.content_type == OCTET_STREAM and declared else info.content_type
            extension = _EXTENSIONS.get(mime, "bin")
            suffix = f"-{index}" if len(artifacts) or index else ""
            artifacts.append(artifact_pb2.Artifact(file_id=info.file_id, mime_type=mime, size_bytes=info.size_bytes,
                                                   sha256=info.sha256, name=f"{self._job_id}{suffix}.{extension}"))
        return artifacts

    async def abort(self) -> None:
        for upload in self._uploads.values():
            await upload.abort()
        self._uploads.clear()
