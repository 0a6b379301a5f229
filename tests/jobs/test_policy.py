"""Retry decisions, backoff bounds and the ListOperations filter."""

from __future__ import annotations

import random

import pytest
from google.rpc import code_pb2

from capmesh.gateway.server.jobs.filtering import parse_filter
from capmesh.gateway.server.jobs.policy import StreamEndedEarly, backoff_s, classify
from capmesh.gateway.server.jobs.record import FAILED, SUCCEEDED, JobRecord
from capmesh.services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)


@pytest.mark.parametrize(
    "error, retry",
    [
        (Unavailable("down"), True),
        (ResourceExhausted("full", retry_after_s=3), True),
        (StreamEndedEarly("gone"), True),
        (InvalidArgument.single("text", "bad"), False),
        (FailedPrecondition("no"), False),
        (PermissionDenied("no"), False),
        (ValueError("bug"), False),
    ],
)
def test_what_is_retried(error, retry):
    status, retryable, _ = classify(error)
    assert retryable is retry and status.code != code_pb2.OK


def test_a_retry_hint_from_the_server_is_honoured():
    _, _, hint = classify(ResourceExhausted("full", retry_after_s=3))
    assert backoff_s(1, 0.1, 1.0, hint) == 3


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling():
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0), (20, 30.0)]:
        delays = [backoff_s(attempt, 1.0, 30.0, rng=rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling and len(set(delays)) > 100


def record(state: int, **labels) -> JobRecord:
    return JobRecord(job_id="j", capability="tts", method="/m", request=b"", state=state, labels=labels)


def test_filters_combine_terms_with_and():
    matches = parse_filter('labels.characterId = "char_001" AND state = SUCCEEDED AND capability = tts')
    assert matches(record(SUCCEEDED, characterId="char_001"))
    assert not matches(record(FAILED, characterId="char_001"))
    assert not matches(record(SUCCEEDED, characterId="char_002"))
    assert not matches(record(SUCCEEDED))
    assert parse_filter("state != JOB_STATE_FAILED AND done = true")(record(SUCCEEDED))
    assert parse_filter("")(record(FAILED))


@pytest.mark.parametrize(
    "text", ["colour = blue", "state = SLEEPING", "labels. = x", "state SUCCEEDED", "done = maybe"]
)
def test_bad_filters_are_invalid_argument(text):
    with pytest.raises(InvalidArgument) as caught:
        parse_filter(text)
    assert caught.value.violations[0].field == "filter"
