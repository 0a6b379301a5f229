"""Options that several commands share, declared once here and added to each command by `with_options`.

typer reads a command's options from its function's signature. `with_options(*table)` appends the
table's options to that signature as keyword-only parameters; the command receives their values in
`**options` under the table's names and passes them on (image, video and talk straight to the client
call, whose keywords they are). So `capmesh image`, `capmesh video` and `capmesh talk`, or `capmesh doc
outline` and `capmesh doc write`, cannot drift apart on what `--steps` or `--timeout` mean.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import typer

DEFAULT_ADDRESS = "127.0.0.1:50051"

Command = TypeVar("Command", bound=Callable[..., None])


@dataclass(frozen=True)
class Shared:
    """One shared option: the parameter's name, its type and its typer.Option."""

    name: str
    type: Any
    option: Any


def with_options(*table: Shared) -> Callable[[Command], Command]:
    """Adds the table's options to the command; it must end with `**options: Any` to receive them."""

    def add(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        shared = [
            inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, default=s.option, annotation=s.type)
            for s in table
        ]
        command.__signature__ = signature.replace(parameters=[*own, *shared])  # type: ignore[attr-defined]
        return command

    return add


def address_option(server: str = "") -> Any:
    """--address: the gateway, or also the capability's own server (`server`) reached directly."""
    where = f"The gateway, or the {server} server." if server else "The gateway."
    return typer.Option(DEFAULT_ADDRESS, "--address", envvar="CAPMESH_ADDRESS", help=where)


MODEL = Shared("model", str, typer.Option("", help="The model; empty selects the service default."))
TIMEOUT = Shared("timeout", float | None, typer.Option(None, help="Seconds before the call gives up."))

STEPS = Shared("steps", int | None, typer.Option(None, "--steps", help="Denoising steps (default: the model's)."))
GUIDANCE = Shared(
    "guidance_scale", float | None, typer.Option(None, "--guidance", help="Classifier-free guidance scale.")
)

NEGATIVE = Shared("negative_prompt", str, typer.Option("", "--negative", help="What the output should avoid."))

# The diffusion commands (image, video): the fields of every diffusion request (services/diffusion/request.py)
# that mean the same in both. Seed and size are each command's own: their defaults differ (image i uses
# seed + i; a video's size follows its first frame). `capmesh talk` shares STEPS and GUIDANCE (its neural
# engines denoise too).
DIFFUSION = (STEPS, GUIDANCE, NEGATIVE, MODEL, TIMEOUT)


def parse_size(size: str) -> tuple[int, int]:
    """'832x480' -> (832, 480); '' -> (0, 0), the service's default."""
    if not size:
        return 0, 0
    width, sep, height = size.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise typer.BadParameter(f"--size {size!r} is not WIDTHxHEIGHT, e.g. 832x480")
    return int(width), int(height)
