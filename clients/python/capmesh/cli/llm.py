"""`capmesh chat`: talk with the LLM service, interactively or once.

    capmesh chat                                  # interactive; history kept for the session
    capmesh chat --system "Be brief." -t 0.7      # with a system prompt and a temperature
    capmesh chat -m "What is capmesh?"            # one question, the answer on stdout
    capmesh chat --frequency-penalty 0.8 --top-k 40   # sampling controls, applied per request

The answer is printed as its tokens stream in. In the interactive chat Ctrl-C stops the answer
being written (the server stops generating at its next token) and the chat goes on; Ctrl-D or
/exit leaves, /reset forgets the history.
"""

from __future__ import annotations

import sys
from typing import TypedDict

import typer

from capmesh.cli.options import address_option
from capmesh.cli.progress import RANDOM_WEIGHTS_NOTE


class _ChatOptions(TypedDict):
    """The keyword arguments of `LlmClient.stream` that every question of the chat shares."""

    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    stop: list[str]
    seed: int | None
    model: str
    timeout: float | None
    presence_penalty: float | None
    frequency_penalty: float | None
    repetition_penalty: float | None
    min_p: float | None
    top_k: int | None


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)


def chat(
    message: str | None = typer.Option(None, "--message", "-m", help="Ask this once and exit (for scripts)."),
    system: str = typer.Option("", "--system", "-s", help="The system prompt."),
    temperature: float | None = typer.Option(None, "--temperature", "-t", help="0 to 2; 0 is greedy."),
    top_p: float | None = typer.Option(None, help="Nucleus sampling mass, above 0 and at most 1."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", "-n", help="Longest answer in tokens."),
    stop: list[str] = typer.Option([], "--stop", help="A sequence that ends the answer (repeatable)."),
    seed: int | None = typer.Option(None, help="Sampling seed, for repeatable answers."),
    model: str = typer.Option("", help="The model; empty selects the service's default."),
    presence_penalty: float | None = typer.Option(None, help="-2 to 2: less of any token already said."),
    frequency_penalty: float | None = typer.Option(None, help="-2 to 2: less of a token, per time it was said."),
    repetition_penalty: float | None = typer.Option(None, help="Above 0, 1 is none: transformers' penalty."),
    min_p: float | None = typer.Option(None, help="0 to 1: drop tokens below min_p x the likeliest's probability."),
    top_k: int | None = typer.Option(None, help="Sample from the k likeliest tokens only; 0 is all."),
    address: str = address_option("LLM"),
    timeout: float | None = typer.Option(None, help="Seconds before one answer gives up."),
) -> None:
    """Chat with the LLM: tokens print as they stream; Ctrl-C stops the answer, not the chat."""
    from rich.console import Console

    from capmesh.client import CapmeshClientError, sync_channel
    from capmesh.client.llm import LlmClient, Message

    console = Console(stderr=True)
    options = _ChatOptions(
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        stop=stop,
        seed=seed,
        model=model,
        timeout=timeout,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        repetition_penalty=repetition_penalty,
        min_p=min_p,
        top_k=top_k,
    )
    history = [Message("system", system)] if system else []

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    with sync_channel(address) as channel:
        llm = LlmClient(channel)
        if message is not None:
            try:
                answer = llm.chat([*history, Message("user", message)], on_delta=write, **options)
            except CapmeshClientError as exc:
                _report(console, exc)
                raise typer.Exit(1) from exc
            write("\n")
            _notes(console, answer)
            return

        console.print("[dim]capmesh chat: Ctrl-C stops an answer, Ctrl-D or /exit leaves, /reset forgets.[/dim]")
        while True:
            try:
                question = console.input("[bold green]you>[/bold green] ")
            except (EOFError, KeyboardInterrupt):
                console.print()
                return
            if not question.strip():
                continue
            if question.strip() == "/exit":
                return
            if question.strip() == "/reset":
                history = [Message("system", system)] if system else []
                console.print("[dim](history cleared)[/dim]")
                continue
            turn = [*history, Message("user", question)]
            call = llm.stream(turn, **options)
            try:
                answer = llm.collect(call, on_delta=write)
            except KeyboardInterrupt:
                call.cancel()
                write("\n")
                console.print("[yellow](answer stopped; not added to the history)[/yellow]")
                continue
            except CapmeshClientError as exc:
                write("\n")
                _report(console, exc)
                continue
            write("\n")
            _notes(console, answer)
            history = [*turn, Message("assistant", answer.text)]


def _notes(console, answer) -> None:
    """What the reader should know about an answer, on stderr so that stdout stays the answer alone."""
    if answer.random_weights:
        console.print(f"[yellow]{RANDOM_WEIGHTS_NOTE.strip()}[/yellow]")
    if answer.finish_reason == "length":
        console.print("[dim](the answer reached the token limit)[/dim]")


def _report(console, exc) -> None:
    console.print(f"[red]capmesh chat failed: {exc}[/red]")
    for field, description in exc.field_violations:
        console.print(f"  [red]{field}[/red]: {description}")
