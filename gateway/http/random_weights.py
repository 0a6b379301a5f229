"""`x-capmesh-random-weights: true` on the OpenAI routes when the answer comes from a model with
random weights (the project-built `tiny` checkpoints): its text, image or audio is noise, and an
OpenAI client shows no other sign of it.

Backends say so when they register (the `random_weights` label, services/runtime/registration.py).
The header is set when every AVAILABLE backend of the capability says so, whichever of them
answered; a mesh that mixes real and random models gets no header rather than a wrong one.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from capmesh.gateway.server.registry.model import State
from capmesh.gateway.server.registry.registry import Registry

HEADER = (b"x-capmesh-random-weights", b"true")
LABEL = "random_weights"
# The routes whose answer comes from a capability's model, by the capability that answers them.
ROUTES = {
    "/v1/chat/completions": "llm",
    "/v1/completions": "llm",
    "/v1/images/generations": "imagegen",
    "/v1/audio/speech": "tts",
}


def random_weights(registry: Registry, capability: str) -> bool:
    """Whether every AVAILABLE backend of `capability` serves a model with random weights."""
    available = [
        e for e in registry.entries.values() if e.record.capability == capability and e.state is State.AVAILABLE
    ]
    return bool(available) and all(e.record.labels.get(LABEL) == "true" for e in available)


class RandomWeightsHeader:
    def __init__(self, app: ASGIApp, registry: Registry) -> None:
        self.app = app
        self._registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        capability = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if capability is None:
            await self.app(scope, receive, send)
            return

        async def flag(message: Message) -> None:
            if message["type"] == "http.response.start" and random_weights(self._registry, capability):
                message = {**message, "headers": [*message.get("headers", []), HEADER]}
            await send(message)

        await self.app(scope, receive, flag)
