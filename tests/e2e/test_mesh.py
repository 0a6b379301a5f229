"""The whole mesh as `scripts/up.sh` starts it: `capmesh up` with every capability, real processes.

Checks what the README promises: each server lists its capability service, health and reflection
to grpcurl and answers SERVING; the gateway proxies every capability; the README's grpcurl, HTTP
and CLI examples work (against the ports this run picked).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from capmesh.services.catalog import NAMES

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
GRPCURL = shutil.which("grpcurl") or str(BIN / "grpcurl")
CAPMESH = [sys.executable, "-m", "capmesh.cli.main"]
SERVICE_NAMES = {
    "tts": "capmesh.tts.v1.TtsService",
    "llm": "capmesh.llm.v1.LlmService",
    "videogen": "capmesh.videogen.v1.VideoGenService",
    "imagegen": "capmesh.imagegen.v1.ImageGenService",
    "talkinghead": "capmesh.talkinghead.v1.TalkingHeadService",
}


def grpcurl(*args: str) -> str:
    done = subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


MESH_SECRET = "e2e-mesh-secret"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    logs = tmp_path_factory.mktemp("mesh-logs")
    process = subprocess.Popen(
        [*CAPMESH, "up", "--port", "0", "--http-port", "0", "--log-dir", str(logs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "250", "CAPMESH_MESH_SECRET": MESH_SECRET},
    )
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("logs:"):
                break
        table = "".join(lines)
        assert "logs:" in table, table
        addresses = dict(re.findall(r"│\s*([a-z]+(?: \((?:gRPC|HTTP)\))?)\s*│\s*(\S+)\s*│", table))
        yield addresses
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            process.kill()
    assert process.returncode == 0, "".join(lines) + (process.stdout.read() if process.stdout else "")


def test_every_service_lists_its_contract_health_and_reflection_and_is_serving(mesh):
    assert set(NAMES) <= set(mesh), mesh
    # A service answers only callers holding the mesh secret, reflection too (health is open, but
    # grpcurl reads its schema by reflection).
    secret = ("-H", f"x-capmesh-mesh-secret: {MESH_SECRET}")
    for capability, service in SERVICE_NAMES.items():
        listed = set(grpcurl(*secret, mesh[capability], "list").split())
        assert {service, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed
        reply = json.loads(
            grpcurl(*secret, "-d", json.dumps({"service": service}), mesh[capability], "grpc.health.v1.Health/Check")
        )
        assert reply["status"] == "SERVING"
    assert set(SERVICE_NAMES.values()) <= set(grpcurl(mesh["gateway (gRPC)"], "list").split())


def run_cli(args: list[str], mesh, timeout_s: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "CAPMESH_ADDRESS": mesh["gateway (gRPC)"], "COLUMNS": "250"}
    done = subprocess.run([*CAPMESH, *args], env=env, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_text_to_talking_head_through_the_gateway(mesh, tmp_path):
    from PIL import Image
    from skimage import data

    from tests.support.video import probe_mp4

    face = tmp_path / "face.png"
    Image.fromarray(data.astronaut()).resize((256, 256)).save(face)
    out = tmp_path / "talk.mp4"
    run_cli(["talk", str(face), "--text", "Hello there.", "-o", str(out)], mesh)
    probe, _ = probe_mp4(out.read_bytes(), decode_frames=False)
    assert probe.frame_count > 0 and probe.audio_codec == "aac" and probe.audio_seconds > 0.3


def test_video_and_image_commands_through_the_gateway(mesh, tmp_path):
    from PIL import Image

    from tests.support.video import probe_mp4

    still = tmp_path / "still.png"
    Image.new("RGB", (64, 64), (120, 80, 40)).save(still)
    video = tmp_path / "out.mp4"
    run_cli(["video", str(still), "a slow pan", "-o", str(video), "--frames", "5", "--steps", "2", "--seed", "1"], mesh)
    probe, _ = probe_mp4(video.read_bytes(), decode_frames=False)
    assert probe.frame_count == 5
    image = tmp_path / "out.png"
    run_cli(["image", "a red circle", "-o", str(image), "--steps", "2", "--seed", "1"], mesh)
    assert any(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in tmp_path.glob("out*.png"))


def test_a_speech_job_over_http_stores_its_audio_as_a_file(mesh):
    base = mesh["gateway (HTTP)"]
    base = base if base.startswith("http") else f"http://{base}"
    with httpx.Client(base_url=base, timeout=60) as http:
        submitted = http.post(
            "/v1/jobs",
            json={
                "method": "/capmesh.tts.v1.TtsService/StreamSynthesize",
                "request": {"@type": "type.googleapis.com/capmesh.tts.v1.StreamSynthesizeRequest", "text": "A job."},
                "labels": {"characterId": "char_001"},
            },
        )
        assert submitted.status_code == 202, submitted.text
        name = submitted.json()["operation"]["name"]
        with http.stream("GET", f"/v1/jobs/{name.split('/')[-1]}/events") as events:
            kinds = [json.loads(line[5:])["event"]["type"] for line in events.iter_lines() if line.startswith("data:")]
        assert kinds[-1] == "JOB_EVENT_TYPE_SUCCEEDED", kinds
        operation = http.get(f"/v1/{name}").json()
        artifact = operation["response"]["artifacts"][0]
        listed = http.get("/v1/operations", params={"filter": 'labels.characterId = "char_001"'}).json()
        assert name in [o["name"] for o in listed["operations"]]
        audio = http.get(f"/v1/files/{artifact['fileId']}:download")
        assert audio.status_code == 200 and audio.content[:4] == b"RIFF"


# -- the README's Quickstart, as written --------------------------------------------------------
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_blocks(language: str, heading: str = "### Try it") -> list[str]:
    """The README's code blocks in `language` under `heading` (up to the next "## " heading), in order."""
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def commands(block: str) -> list[str]:
    """One entry per command of a bash block: continuation lines joined, comments left out."""
    joined = block.replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def as_here(text: str, mesh: dict[str, str]) -> str:
    """The README's addresses (the default ports) replaced by the ones this run's mesh picked."""
    http = mesh["gateway (HTTP)"].removeprefix("http://")
    return text.replace("localhost:50051", mesh["gateway (gRPC)"]).replace("localhost:8080", http)


def test_the_readme_examples_run_as_written(mesh, tmp_path):
    """Every command of "Try it", its Python example and the OpenAI SDK example, run from a folder
    like the repository's (`.venv` in it) against this run's ports: each exits 0, and what each one
    says or writes is checked."""
    (tmp_path / ".venv").symlink_to(BIN.parent)
    env = {**os.environ, "CAPMESH_ADDRESS": mesh["gateway (gRPC)"], "COLUMNS": "250"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    said: dict[str, str] = {}
    for block in readme_blocks("bash"):
        for command in commands(block):
            done = run("bash", "-c", as_here(command, mesh))
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
            said[command] = done.stdout
            if "-o hello.wav" in command:  # the speech of curl, then of the CLI, each a WAV file
                assert (tmp_path / "hello.wav").read_bytes()[:4] == b"RIFF", command
                (tmp_path / "hello.wav").unlink()

    def output(prefix: str) -> str:
        return next(out for command, out in said.items() if command.startswith(prefix))

    assert "capmesh.llm.v1.LlmService" in output(".venv/bin/grpcurl -plaintext localhost:50051 list").split()
    assert '"result"' in output(".venv/bin/grpcurl -plaintext -d")
    assert "AVAILABLE" in output(".venv/bin/capmesh status")
    listed = json.loads(output("curl -s localhost:8080/v1/capabilities"))
    assert {c["capability"] for c in listed["capabilities"]} >= set(NAMES)
    chat = json.loads(output("curl -s localhost:8080/v1/chat/completions"))
    assert chat["choices"][0]["message"]["role"] == "assistant"
    labelled = json.loads(output("curl -s 'localhost:8080/v1/operations?filter="))
    assert labelled["operations"] and all(o["done"] for o in labelled["operations"])
    assert json.loads((tmp_path / "outline.json").read_text())["nodes"]
    assert (tmp_path / "guide.md").read_text().strip()

    [snippet] = readme_blocks("python")
    done = run(sys.executable, "-c", as_here(snippet, mesh))
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"\d+\.\d\ds of audio/wav\n", done.stdout), done.stdout
    assert (tmp_path / "hello.wav").read_bytes()[:4] == b"RIFF"

    # The OpenAI SDK with a required tool: the tiny model's call is decoded under the tool's schema.
    [tools] = readme_blocks("python", "## The OpenAI-compatible API")
    done = run(sys.executable, "-c", as_here(tools, mesh))
    assert done.returncode == 0, done.stderr
    reason, arguments = done.stdout.split(" ", 1)
    assert reason == "tool_calls" and isinstance(json.loads(arguments)["city"], str)
