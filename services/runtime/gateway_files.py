"""Reads files that requests reference by id from the gateway's file service."""

from __future__ import annotations

import grpc

from capmesh.gateway.v1 import file_service_pb2, file_service_pb2_grpc
from capmesh.services.runtime.errors import InvalidArgument, NotFound, Unavailable
from capmesh.services.runtime.gateway_channel import GatewayClient, gateway_metadata
from capmesh.services.runtime.settings import ServerSettings


class GatewayFiles(GatewayClient):
    def __init__(self, settings: ServerSettings) -> None:
        super().__init__(settings)
        self._address = settings.gateway
        self._max_bytes = settings.max_file_bytes  # the same limit the gateway stores files under

    async def fetch(self, file_id: str, field: str) -> bytes:
        stub = file_service_pb2_grpc.FileServiceStub(self._open())
        parts: list[bytes] = []
        size = 0
        try:
            async for message in stub.DownloadFile(
                file_service_pb2.DownloadFileRequest(file_id=file_id), metadata=gateway_metadata(self._settings)
            ):
                data = message.data  # each read of a bytes field copies it
                parts.append(data)
                size += len(data)
                if size > self._max_bytes:
                    raise InvalidArgument.single(f"{field}.file_id", f"the file is larger than {self._max_bytes} bytes")
        except grpc.aio.AioRpcError as exc:
            # One rule everywhere, the file service's: an id that is not of our shape is the caller's
            # malformed field (INVALID_ARGUMENT); a well-formed id of no stored file is NOT_FOUND.
            if exc.code() is grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument.single(
                    f"{field}.file_id",
                    "is not a valid file id (32 characters of A-Z, a-z, 0-9, '_' and '-')",
                    reason="INVALID_FILE_ID",
                ) from exc
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"{field}.file_id {file_id!r}: {exc.details()}", reason="FILE_NOT_FOUND") from exc
            raise Unavailable(
                f"could not read {field}.file_id from the gateway at {self._address}: {exc.details()}",
                reason="GATEWAY_FILES_UNAVAILABLE",
            ) from exc
        return b"".join(parts)
