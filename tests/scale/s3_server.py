"""A real S3-compatible server for tests: moto's server mode as a child process on a free port.

`moto_server -p 0` binds a free port and prints `Running on http://127.0.0.1:PORT`; we read that line
instead of guessing a port, and the server is ready once it has printed it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3

RUNNING = re.compile(r"Running on (http://\S+)")
# moto accepts any credentials; boto3 only needs some to sign its requests.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    def __init__(self, timeout_s: float = 60.0) -> None:
        binary = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
        self._process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self._process.stdout is not None
        deadline = time.monotonic() + timeout_s
        while True:
            line = self._process.stdout.readline()  # blocks until moto says where it listens (or exits)
            found = RUNNING.search(line)
            if found:
                self.url = found.group(1)
                break
            if not line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not start: {line!r}")
        # Keep reading its request log so a full pipe never blocks it.
        threading.Thread(target=self._process.stdout.read, daemon=True).start()

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables a gateway (or boto3 here) needs to reach this server."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.url}

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
