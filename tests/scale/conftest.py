"""Fixtures of the scale-out tests: one S3-compatible server for the run, a fresh bucket per test."""

from __future__ import annotations

import itertools

import pytest

from tests.scale.s3_server import S3Server

_buckets = itertools.count()


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3_server, monkeypatch) -> str:
    """A new empty bucket; boto3 in this process (and gateways started with `s3_server.env`) reach it
    through the standard AWS variables."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    name = f"capmesh-test-{next(_buckets)}"
    s3_server.client().create_bucket(Bucket=name)
    return name
