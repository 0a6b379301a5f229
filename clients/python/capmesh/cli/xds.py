"""`capmesh xds-bootstrap`: the bootstrap file that lets any gRPC client with xDS support (grpcio,
grpc-go, grpc-java, ...) dial `xds:///<capability>` and reach the mesh's backends directly, with the
gateway as its xDS server (see capmesh.client.xds); with `--envoy`, the bootstrap of an Envoy that
serves the whole mesh on one port from the same resources."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from capmesh.cli.options import DEFAULT_ADDRESS
from capmesh.client.xds import BOOTSTRAP_FILE_ENV, DEFAULT_ENVOY_LISTEN, bootstrap, envoy_bootstrap
from capmesh.services.runtime.settings import MESH_SECRET_ENV


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
        "", "--node-id", help="The node id the client presents (default: capmesh-client-HOST, capmesh-envoy-HOST)."
    ),
    envoy: bool = typer.Option(False, "--envoy", help="An Envoy bootstrap (`envoy -c FILE`) instead of gRPC's."),
    listen: str = typer.Option(DEFAULT_ENVOY_LISTEN, "--listen", help="With --envoy: where Envoy serves (host:port)."),
    mesh_secret: str = typer.Option(
        "",
        "--mesh-secret",
        envvar=MESH_SECRET_ENV,
        show_default=False,
        help="With --envoy: the mesh secret Envoy presents to backends and to the gateway.",
    ),
) -> None:
    """Write an xDS bootstrap pointing at the gateway: `export GRPC_XDS_BOOTSTRAP=FILE`, then dial `xds:///tts`
    (with --envoy: `envoy -c FILE`, then dial Envoy's --listen address)."""
    try:
        built = envoy_bootstrap(gateway, listen, mesh_secret, node_id) if envoy else bootstrap(gateway, node_id)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    text = json.dumps(built, indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    # An Envoy bootstrap may hold the mesh secret: readable by its owner only.
    with os.fdopen(os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(text)
    then = f"envoy -c {output.resolve()}" if envoy else f"export {BOOTSTRAP_FILE_ENV}={output.resolve()}"
    typer.echo(f"wrote {output}; {then}", err=True)
