"""The web console in a real headless Chromium (playwright-core driving the system's chromium):
live capability health, speech, streaming chat and a video job with its progress bar; a
screenshot is kept. Skips with a reason when node, chromium or playwright-core are missing."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.http.support import tiny_png

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("console_check.mjs")
CHROMIUM = Path("/usr/bin/chromium")


def _missing() -> str:
    if shutil.which("node") is None:
        return "node is not installed"
    if not CHROMIUM.exists():
        return "chromium is not installed (apt-get install chromium chromium-driver)"
    if not (ROOT / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed (npm install --no-save playwright-core)"
    return ""


@pytest.mark.skipif(bool(_missing()), reason=_missing() or "ready")
def test_console_in_headless_chromium(mesh, tmp_path):
    image = tmp_path / "portrait.png"
    image.write_bytes(tiny_png(64, 64, 90))
    screenshot = tmp_path / "console.png"
    completed = subprocess.run(
        ["node", str(SCRIPT), mesh.http_url + "/", str(screenshot), str(image)],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=ROOT,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no report from the browser script:\n{completed.stdout}\n{completed.stderr}"
    report = json.loads(lines[-1])
    assert report["ok"], f"{report.get('error')}\nstatuses: {report.get('statuses')}\njobs: {report.get('jobs')}"
    print(f"console screenshot: {screenshot}")

    assert report["watchState"] == "live"
    assert {"tts", "llm"} <= {c["name"] for c in report["capabilities"] if c["green"]}
    assert report["audioDuration"] > 0
    assert report["chatLines"][:2] == ["user", "assistant"]
    assert report["jobProgress"] == 100
    assert report["videoStatus"] == "done" and report["videoSource"] == "blob:"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["docsOperations"] > 25
    hosts = {urlparse(url).hostname for url in report["requests"] if url.startswith("http")}
    assert hosts == {"127.0.0.1"}, f"the console reached beyond the gateway: {hosts}"
    failures = [e for e in report["consoleErrors"] if not e.startswith("Failed to load resource")]
    assert not failures, report["consoleErrors"]
