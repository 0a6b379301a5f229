"""TTS streaming: time to the first audio chunk vs the whole text, and the real-time factor.

A 20-sentence English text is synthesized to WAV by the espeak-ng engine and by the tiny random
VITS checkpoint (transformers engine, CPU), calling the engine directly (no gRPC), so the figures
are the engines' own. Real-time factor = synthesis seconds / audio seconds (below 1 is faster
than real time).

    .venv/bin/python -m benchmarks.run tts [--quick]
"""

from __future__ import annotations

import time

from benchmarks.harness import Row, Stats
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.tts.config import TtsSettings
from capmesh.services.tts.domain import AudioChunk, SynthesisRequest
from capmesh.services.tts.engine import TtsEngine, make_engine

BENCHMARK = "tts"
TEXT = " ".join(
    f"Sentence {i} of the benchmark tells a short story about streaming speech, one line at a time."
    for i in range(1, 21)
)
ENGINES = {
    "espeak": TtsSettings(engine="espeak"),
    "vits-tiny": TtsSettings(engine="transformers", model="tiny", device="cpu"),
}


def measure(engine: TtsEngine) -> tuple[float, float, float]:
    """One synthesis: (seconds to the first chunk, seconds in all, seconds of audio)."""
    first: list[float] = []
    start = time.perf_counter()

    def emit(item: object) -> None:
        if isinstance(item, AudioChunk) and not first:
            first.append(time.perf_counter() - start)

    result = engine.synthesize(SynthesisRequest(text=TEXT, seed=1), CancelToken.never(), emit)
    return first[0], time.perf_counter() - start, result.duration_s


def run(quick: bool) -> list[Row]:
    repeats = 3 if quick else 10
    rows: list[Row] = []
    for name, settings in ENGINES.items():
        engine = make_engine(settings)
        try:
            measure(engine)  # warm-up: loads the model, fills caches
            samples = [measure(engine) for _ in range(repeats)]
        finally:
            engine.close()
        first = Stats(tuple(s[0] for s in samples))
        total = Stats(tuple(s[1] for s in samples))
        rtf = Stats(tuple(s[1] / s[2] for s in samples))
        compared = "" if name == "espeak" else "espeak"
        rows += [
            Row.from_stats(BENCHMARK, f"{name} first chunk", "s", first, baseline=f"{name} total"),
            Row.from_stats(BENCHMARK, f"{name} total", "s", total, baseline=f"{compared} total" if compared else ""),
            Row.from_stats(
                BENCHMARK,
                f"{name} real-time factor",
                "x",
                rtf,
                baseline=f"{compared} real-time factor" if compared else "",
            ),
        ]
    return rows
