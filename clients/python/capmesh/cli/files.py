"""`capmesh files`: the gateway's file store (inputs and outputs referenced by id).

capmesh files upload portrait.png [--ttl 3600] [--label characterId=char_001] [--json]
capmesh files download FILE_ID [-o out.bin] [--offset N --length M]
capmesh files ls
capmesh files rm FILE_ID
"""

from __future__ import annotations

from pathlib import Path

import typer

from capmesh.cli.options import address_option
from capmesh.cli.progress import check_output

files_app = typer.Typer(no_args_is_help=True, help="Upload, download, list and delete stored files.")
ADDRESS = address_option()


def register(app: typer.Typer) -> None:
    app.add_typer(files_app, name="files")


def _fail(error) -> None:
    from capmesh.client import from_rpc_error

    typer.secho(f"error: {from_rpc_error(error)}", fg="red", err=True)
    raise typer.Exit(1)


def _describe(info) -> str:
    return (
        f"{info.file_id}  {info.size_bytes} bytes  {info.mime_type}  sha256 {info.sha256}  "
        f"expires {info.expire_time.ToDatetime():%Y-%m-%d %H:%M:%S}Z  {info.name}"
    )


@files_app.command("upload")
def upload(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="The file to upload."),
    ttl: float = typer.Option(0.0, help="Seconds until it expires; 0: the gateway default (24 h)."),
    mime_type: str = typer.Option("", help="The declared media type; the stored type is detected when possible."),
    label: list[str] = typer.Option([], "--label", "-l", help="KEY=VALUE (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the stored file's description as JSON."),
    address: str = ADDRESS,
) -> None:
    """Upload a file and print its id (only the id on stdout: `ID=$(capmesh files upload a.wav)`)."""
    import grpc
    from google.protobuf import json_format
    from rich.console import Console
    from rich.progress import Progress

    from capmesh.client import sync_channel
    from capmesh.client.files import upload_file

    labels = dict(item.partition("=")[::2] for item in label)
    # The bar goes to stderr: stdout carries only the result, for scripts.
    with Progress(transient=True, console=Console(stderr=True)) as bar, sync_channel(address) as channel:
        task = bar.add_task(path.name, total=path.stat().st_size)
        try:
            info = upload_file(
                channel,
                path,
                mime_type=mime_type,
                ttl_s=ttl,
                labels=labels,
                on_progress=lambda size: bar.advance(task, size),
            )
        except grpc.RpcError as exc:
            _fail(exc)
    if as_json:
        typer.echo(json_format.MessageToJson(info, indent=None))
    else:
        typer.echo(info.file_id)
        typer.echo(_describe(info), err=True)


@files_app.command("download")
def download(
    file_id: str = typer.Argument(...),
    output: Path | None = typer.Option(None, "--output", "-o", help="Where to write; default: the stored name."),
    offset: int = typer.Option(0, help="First byte."),
    length: int = typer.Option(0, help="Bytes to read; 0: to the end."),
    address: str = ADDRESS,
) -> None:
    """Download a file (or a byte range of it)."""
    import grpc

    from capmesh.client import sync_channel
    from capmesh.client.files import FileInfo, download_file

    def target(info: FileInfo) -> Path:
        return output or check_output("files download", Path(Path(info.name).name or file_id))

    if output is not None:
        check_output("files download", output)
    with sync_channel(address) as channel:
        try:
            _, path, written = download_file(channel, file_id, target, offset=offset, length=length)
        except grpc.RpcError as exc:
            _fail(exc)
    typer.echo(f"{written} bytes -> {path}", err=True)


@files_app.command("ls")
def list_files(page_size: int = typer.Option(100, help="Files per page."), address: str = ADDRESS) -> None:
    """List stored files, newest first (every page)."""
    import grpc

    from capmesh.client import sync_channel
    from capmesh.gateway.v1 import file_service_pb2, file_service_pb2_grpc

    token = ""
    with sync_channel(address) as channel:
        stub = file_service_pb2_grpc.FileServiceStub(channel)
        while True:
            try:
                page = stub.ListFiles(file_service_pb2.ListFilesRequest(page_size=page_size, page_token=token))
            except grpc.RpcError as exc:
                _fail(exc)
            for info in page.files:
                typer.echo(_describe(info))
            token = page.next_page_token
            if not token:
                break


@files_app.command("rm")
def remove(file_id: str = typer.Argument(...), address: str = ADDRESS) -> None:
    """Delete a stored file."""
    import grpc

    from capmesh.client import sync_channel
    from capmesh.gateway.v1 import file_service_pb2, file_service_pb2_grpc

    with sync_channel(address) as channel:
        try:
            file_service_pb2_grpc.FileServiceStub(channel).DeleteFile(
                file_service_pb2.DeleteFileRequest(file_id=file_id)
            )
        except grpc.RpcError as exc:
            _fail(exc)
    typer.echo(f"deleted {file_id}", err=True)
