"""The talking-head stages (those of the EchoMimic worker capmesh replaces) and one overall percent.

A call goes through processing, synthesizing (only when the request gives text instead of audio),
downloading, face_detecting, inference, merging_audio and completed, in that order; a failure
reports failed before the error status. A call that waits for a free slot reports `queued` (with its
queue position) while it waits.

Engines report each stage's own 0-100; `OverallProgress` turns that into the one figure a caller
shows: every stage owns a share of 0-100 (inference the most), a report becomes the stage's start
plus its share of the stage's percent, and the figure never goes back (a stage that reports 0 again,
or `queued` and `failed`, keep the figure where it was).
"""

from __future__ import annotations

import dataclasses

from capmesh.services.runtime.progress import ProgressUpdate

PROCESSING = "processing"
SYNTHESIZING = "synthesizing"
DOWNLOADING = "downloading"
FACE_DETECTING = "face_detecting"
INFERENCE = "inference"
MERGING_AUDIO = "merging_audio"
COMPLETED = "completed"
FAILED = "failed"

# The engine's stages, in order (what every TalkingHead engine emits).
ENGINE_STAGES = (DOWNLOADING, FACE_DETECTING, INFERENCE, MERGING_AUDIO)
# Each stage's share of the overall percent. Inference dominates the wall time of every engine;
# speech synthesis is a network call to another capability, about a tenth of a call.
WEIGHTS = {
    PROCESSING: 1.0,
    SYNTHESIZING: 12.0,
    DOWNLOADING: 4.0,
    FACE_DETECTING: 3.0,
    INFERENCE: 72.0,
    MERGING_AUDIO: 8.0,
}


def stages_for(with_text: bool) -> tuple[str, ...]:
    """The stages a call reports, in order (without `queued`, which only a waiting call sees)."""
    speech = (SYNTHESIZING,) if with_text else ()
    return (PROCESSING, *speech, *ENGINE_STAGES, COMPLETED)


class OverallProgress:
    """Maps stage-local progress to one monotonic overall percent for one call."""

    def __init__(self, with_text: bool) -> None:
        stages = [s for s in stages_for(with_text) if s in WEIGHTS]
        total = sum(WEIGHTS[s] for s in stages)
        self._spans: dict[str, tuple[float, float]] = {}
        start = 0.0
        for stage in stages:
            share = 100.0 * WEIGHTS[stage] / total
            self._spans[stage] = (start, share)
            start += share
        self.percent = 0.0

    def overall(self, update: ProgressUpdate) -> ProgressUpdate:
        """`update` with its percent made overall (never lower than the previous report)."""
        span = self._spans.get(update.stage)
        if update.stage == COMPLETED:
            figure = 100.0
        elif span is None:
            figure = self.percent  # queued, failed: where the call stands
        else:
            start, share = span
            figure = start + share * max(0.0, min(100.0, update.percent)) / 100.0
        self.percent = max(self.percent, figure)
        return dataclasses.replace(update, percent=round(self.percent, 3))
