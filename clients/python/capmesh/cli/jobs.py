"""`capmesh jobs`: run capability calls as durable jobs, find them, watch them, cancel them.

    capmesh jobs submit /capmesh.tts.v1.TtsService/StreamSynthesize -d '{"text": "Hello."}' \\
        --priority 5 --label characterId=char_001 --watch
    capmesh jobs list --filter 'labels.characterId = "char_001" AND state = SUCCEEDED'
    capmesh jobs list -l characterId=char_001 --json
    capmesh jobs get JOB_ID
    capmesh jobs watch JOB_ID [--after EVENT_ID]
    capmesh jobs cancel JOB_ID
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import typer

from capmesh.cli.options import address_option

jobs_app = typer.Typer(no_args_is_help=True, help="Durable asynchronous jobs (google.longrunning operations).")
ADDRESS = address_option()


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")


def _labels(items: list[str]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--label")
        labels[key] = value
    return labels


def _request_message(method: str, data: str):
    """The method's request message from JSON (a string, or @file)."""
    from google.protobuf import json_format, message_factory

    from capmesh.services.catalog import find_method

    descriptor = find_method(method)
    if descriptor is None:
        raise typer.BadParameter(f"{method} is not a capability method", param_hint="METHOD")
    text = Path(data[1:]).read_text() if data.startswith("@") else data
    message = message_factory.GetMessageClass(descriptor.input_type)()
    try:
        json_format.Parse(text or "{}", message)
    except json_format.ParseError as exc:
        raise typer.BadParameter(f"not a {descriptor.input_type.full_name}: {exc}", param_hint="--data") from None
    return "/" + method.lstrip("/"), message


def _fail(error) -> None:
    from capmesh.client import from_rpc_error

    failure = from_rpc_error(error)
    typer.secho(f"error: {failure}", fg="red", err=True)
    for field, description in failure.field_violations:
        typer.secho(f"  {field}: {description}", fg="red", err=True)
    raise typer.Exit(1)


def _metadata(operation):
    from capmesh.gateway.v1 import job_service_pb2

    meta = job_service_pb2.JobMetadata()
    operation.metadata.Unpack(meta)
    return meta


def _operation_dict(operation) -> dict:
    from google.protobuf import json_format

    from capmesh.gateway.v1 import job_service_pb2
    from capmesh.services.catalog import load_contracts

    out = {"name": operation.name, "done": operation.done, "metadata": json_format.MessageToDict(_metadata(operation))}
    if operation.HasField("response"):
        result = job_service_pb2.JobResult()
        operation.response.Unpack(result)
        out["result"] = {
            "artifacts": [json_format.MessageToDict(a) for a in result.artifacts],
            "response_type": result.response.TypeName(),
        }
        load_contracts()  # the response's type must be in the descriptor pool to print it
        with contextlib.suppress(TypeError):
            out["result"]["response"] = json_format.MessageToDict(result.response)
    if operation.HasField("error"):
        out["error"] = {"code": operation.error.code, "message": operation.error.message}
    return out


@jobs_app.command("submit")
def submit(
    method: str = typer.Argument(..., help="e.g. /capmesh.tts.v1.TtsService/StreamSynthesize"),
    data: str = typer.Option("{}", "--data", "-d", help="The request as JSON, or @file.json."),
    priority: int = typer.Option(0, help="From -100 to 100; higher runs first."),
    label: list[str] = typer.Option([], "--label", "-l", help="KEY=VALUE (repeatable)."),
    request_id: str = typer.Option("", help="Idempotency key: the same id returns the same job."),
    timeout: float = typer.Option(0.0, help="Seconds the job may take in all; 0: the gateway default."),
    max_attempts: int = typer.Option(0, help="Attempts for retryable failures; 0: the gateway default."),
    watch_job: bool = typer.Option(False, "--watch", "-w", help="Follow the job with a progress bar."),
    address: str = ADDRESS,
) -> None:
    """Queue a capability call as a job and print its id."""
    import grpc

    from capmesh.client import sync_channel
    from capmesh.gateway.v1 import job_service_pb2, job_service_pb2_grpc

    path, message = _request_message(method, data)
    request = job_service_pb2.SubmitJobRequest(
        method=path,
        priority=priority,
        labels=_labels(label),
        request_id=request_id,
        timeout_seconds=timeout,
        max_attempts=max_attempts,
    )
    request.request.Pack(message)
    with sync_channel(address) as channel:
        try:
            operation = job_service_pb2_grpc.JobServiceStub(channel).SubmitJob(request).operation
        except grpc.RpcError as exc:
            _fail(exc)
        job_id = _metadata(operation).job_id
        typer.echo(job_id)
        if watch_job:
            _watch(channel, job_id, "")


@jobs_app.command("list")
def list_jobs(
    filter_text: str = typer.Option(
        "", "--filter", "-f", help="e.g. 'labels.characterId = \"char_001\" AND state = SUCCEEDED'"
    ),
    label: list[str] = typer.Option([], "--label", "-l", help="Only jobs with this label, KEY=VALUE (repeatable)."),
    page_size: int = typer.Option(50, help="Jobs per page."),
    all_pages: bool = typer.Option(False, "--all", help="Follow every page."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
    address: str = ADDRESS,
) -> None:
    """List jobs, newest first."""
    import grpc
    from google.longrunning import operations_pb2, operations_pb2_grpc
    from rich.console import Console
    from rich.table import Table

    from capmesh.client import sync_channel
    from capmesh.gateway.v1 import job_service_pb2

    # -l k=v is the filter term labels.k = "v", as `jobs submit -l` sets it (json quotes and escapes)
    terms = [filter_text] if filter_text else []
    terms += [f"labels.{key} = {json.dumps(value)}" for key, value in _labels(label).items()]
    filter_text = " AND ".join(terms)
    table = Table("job", "capability", "state", "progress", "attempt", "priority", "labels")
    token = ""
    with sync_channel(address) as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)
        while True:
            try:
                page = stub.ListOperations(
                    operations_pb2.ListOperationsRequest(
                        name="operations", filter=filter_text, page_size=page_size, page_token=token
                    )
                )
            except grpc.RpcError as exc:
                _fail(exc)
            for operation in page.operations:
                if as_json:
                    typer.echo(json.dumps(_operation_dict(operation)))
                    continue
                meta = _metadata(operation)
                table.add_row(
                    meta.job_id,
                    meta.capability,
                    job_service_pb2.JobState.Name(meta.state).removeprefix("JOB_STATE_"),
                    f"{meta.progress.percent:.0f}%",
                    f"{meta.attempt}/{meta.max_attempts}",
                    str(meta.priority),
                    ",".join(f"{k}={v}" for k, v in sorted(meta.labels.items())),
                )
            token = page.next_page_token
            if not token or not all_pages:
                break
    if not as_json:
        Console().print(table)
        if token:
            typer.echo("more: use --all", err=True)


@jobs_app.command("get")
def get(job_id: str = typer.Argument(...), address: str = ADDRESS) -> None:
    """Print a job's operation as JSON (metadata, result or error)."""
    import grpc
    from google.longrunning import operations_pb2, operations_pb2_grpc

    from capmesh.client import sync_channel

    with sync_channel(address) as channel:
        try:
            operation = operations_pb2_grpc.OperationsStub(channel).GetOperation(
                operations_pb2.GetOperationRequest(name=f"operations/{job_id}")
            )
        except grpc.RpcError as exc:
            _fail(exc)
    typer.echo(json.dumps(_operation_dict(operation), indent=2))


def _watch(channel, job_id: str, after: str) -> None:
    import grpc
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from capmesh.client.streams import watch_job
    from capmesh.gateway.v1 import job_service_pb2

    names = job_service_pb2.JobEventType
    console = Console(stderr=True)
    last = None
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(job_id[:12], total=100)
        try:
            # resumes on another gateway from the last event when one dies (CAPMESH_ADDRESS=a,b)
            for event in watch_job(channel, job_id, after):
                last = event
                kind = names.Name(event.type).removeprefix("JOB_EVENT_TYPE_")
                if event.type == job_service_pb2.JOB_EVENT_TYPE_PROGRESS:
                    stage = event.progress.stage or "running"
                    bar.update(task, completed=event.progress.percent, description=f"{job_id[:12]} {stage}")
                else:
                    if event.type == job_service_pb2.JOB_EVENT_TYPE_SUCCEEDED:
                        bar.update(task, completed=100)
                    bar.console.print(f"[{event.event_id}] {kind}: {event.message}")
        except grpc.RpcError as exc:
            _fail(exc)
    if last is not None and last.type != job_service_pb2.JOB_EVENT_TYPE_SUCCEEDED:
        raise typer.Exit(1)


@jobs_app.command("watch")
def watch(
    job_id: str = typer.Argument(...),
    after: str = typer.Option("", help="Resume after this event id."),
    address: str = ADDRESS,
) -> None:
    """Follow a job's events with a live progress bar until it ends (exit 1 unless it succeeded)."""
    from capmesh.client import sync_channel

    with sync_channel(address) as channel:
        _watch(channel, job_id, after)


@jobs_app.command("cancel")
def cancel(job_id: str = typer.Argument(...), address: str = ADDRESS) -> None:
    """Cancel a job: a queued job ends at once, a running one at the backend's next step. A job that
    had already ended is left as it was, and the command says so and exits with status 1."""
    import grpc
    from google.longrunning import operations_pb2, operations_pb2_grpc

    from capmesh.client import sync_channel
    from capmesh.gateway.v1 import job_service_pb2

    name = f"operations/{job_id}"
    with sync_channel(address) as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)
        try:
            before = stub.GetOperation(operations_pb2.GetOperationRequest(name=name))
            if not before.done:
                stub.CancelOperation(operations_pb2.CancelOperationRequest(name=name))
                after = stub.GetOperation(operations_pb2.GetOperationRequest(name=name))
        except grpc.RpcError as exc:
            _fail(exc)
    if before.done:
        state = job_service_pb2.JobState.Name(_metadata(before).state).removeprefix("JOB_STATE_")
        typer.secho(f"job {job_id} had already ended ({state}); nothing to cancel", fg="red", err=True)
        raise typer.Exit(1)
    if after.done:
        state = job_service_pb2.JobState.Name(_metadata(after).state).removeprefix("JOB_STATE_")
        if state != "CANCELLED":  # it ended on its own before the cancel arrived
            typer.secho(f"job {job_id} ended ({state}) before it could be cancelled", fg="red", err=True)
            raise typer.Exit(1)
        typer.echo(f"job {job_id} cancelled")
    else:
        typer.echo(f"cancel requested for {job_id}: it stops at the backend's next step")
