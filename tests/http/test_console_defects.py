"""Issue 16, item 11, in a real headless Chromium against the mesh: the console has an ImageGen panel,
its jobs table keeps the cancel column inside its panel and shows no cancel button on finished jobs,
and it says when outputs come from a model with random weights (backends, chat, images). Skips with
a reason when node, chromium or playwright-core are missing."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from tests.http.test_console_browser import ROOT, _missing

SCRIPT = ROOT / "tests" / "http" / "console_defects.mjs"


def test_openai_routes_flag_random_weights(mesh):
    chat = httpx.post(
        mesh.http_url + "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=60,
    )
    assert chat.status_code == 200, chat.text
    assert chat.headers.get("x-capmesh-random-weights") == "true"  # the tiny LLM's answer is noise
    capabilities = httpx.get(mesh.http_url + "/v1/capabilities", timeout=30).json()["capabilities"]
    labels = {c["capability"]: c["backends"][0]["backend"].get("labels", {}) for c in capabilities}
    assert labels["llm"].get("random_weights") == "true" and "random_weights" not in labels["tts"]  # espeak


@pytest.mark.skipif(bool(_missing()), reason=_missing() or "ready")
def test_console_imagegen_panel_jobs_table_and_random_weights(mesh):
    completed = subprocess.run(
        ["node", str(SCRIPT), mesh.http_url + "/"], capture_output=True, text=True, timeout=170, cwd=ROOT
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no report from the browser script:\n{completed.stdout}\n{completed.stderr}"
    report = json.loads(lines[-1])
    assert report["ok"], report.get("error")
    assert {"llm", "imagegen"} <= set(report["randomWeightBackends"])
    assert "tts" not in report["randomWeightBackends"]
    assert report["imageStatus"] == "done" and report["imageWidth"] > 0
    assert "random weights" in report["imageNote"] and "random weights" in report["chatNote"]
    assert report["finishedCancelVisible"] is False
    assert report["actionInside"] is True
    assert not [e for e in report["consoleErrors"] if not e.startswith("Failed to load resource")]
