"""`capmesh xds-bootstrap`: the bootstrap file that lets any gRPC client with xDS support (grpcio,
grpc-go, grpc-java, ...) dial `xds:///<capability>` and reach the mesh's backends directly, with the
gateway as its xDS server (see capmesh.client.xds)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from capmesh.cli.options import DEFAULT_ADDRESS
from capmesh.client.xds import BOOTSTRAP_FILE_ENV, bootstrap


def register(app: typer.Typer) -> None:
    app.command("xds-bootstrap")(xds_bootstrap)


def xds_bootstrap(
    gateway: str = typer.Option(
        DEFAULT_ADDRESS,
        "--gateway",
        envvar="CAPMESH_ADDRESS",
        help="The gateway (host:port, or several, comma-separated).",
    ),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write the bootstrap here (default: stdout)."),
    node_id: str = typer.Option(
        "", "--node-id", help="The node id the client presents (default: capmesh-client-HOST)."
    ),
) -> None:
    """Write an xDS bootstrap pointing at the gateway: `export GRPC_XDS_BOOTSTRAP=FILE`, then dial `xds:///tts`."""
    try:
        text = json.dumps(bootstrap(gateway, node_id), indent=2) + "\n"
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--gateway") from None
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text)
    typer.echo(f"wrote {output}; export {BOOTSTRAP_FILE_ENV}={output.resolve()}", err=True)
