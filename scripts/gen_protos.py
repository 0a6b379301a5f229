"""Regenerates the Python stubs and .pyi type stubs from protos/ with grpcio-tools.

    python scripts/gen_protos.py           # write clients/python/capmesh/**/v1/*_pb2*.py(i)
    python scripts/gen_protos.py --check   # fail when the committed stubs are stale

google/api, google/rpc and google/longrunning come from the googleapis-common-protos package;
they are staged into .build/proto-deps (that package ships google/longrunning/operations.proto as
operations_proto.proto) so protoc and buf can import them by their usual names.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from google.api import annotations_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "clients" / "python"
DEPS = ROOT / ".build" / "proto-deps"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def stage_dependencies() -> Path:
    google_root = Path(annotations_pb2.__file__).resolve().parent.parent
    shutil.rmtree(DEPS, ignore_errors=True)
    for area in ("api", "rpc", "type"):
        for proto in (google_root / area).rglob("*.proto"):
            target = DEPS / "google" / area / proto.relative_to(google_root / area)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(proto, target)
    longrunning = DEPS / "google" / "longrunning"
    longrunning.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(google_root / "longrunning" / "operations_proto.proto", longrunning / "operations.proto")
    return DEPS


def generate(out_dir: Path) -> list[Path]:
    deps = stage_dependencies()
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    sources = sorted(p.relative_to(PROTOS).as_posix() for p in PROTOS.rglob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{deps}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Every generated folder is a package, so `from capmesh.tts.v1 import tts_service_pb2` works.
    for source in sources:
        folder = out_dir / Path(source).parent
        while folder != out_dir and folder.is_relative_to(out_dir):
            (folder / "__init__.py").touch(exist_ok=True)
            folder = folder.parent
    return sorted(p for p in out_dir.rglob("*") if p.name.endswith(GENERATED_SUFFIXES))


def generated_files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in (root / "capmesh").rglob("*") if p.name.endswith(GENERATED_SUFFIXES)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs differ from fresh ones")
    options = parser.parse_args()
    if not options.check:
        for stale in generated_files(OUT):
            (OUT / stale).unlink()
        written = generate(OUT)
        print(f"generated {len(written)} files under {OUT.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        generate(fresh_root)
        fresh, committed = generated_files(fresh_root), generated_files(OUT)
        problems = [f"missing: {p}" for p in sorted(fresh - committed)]
        problems += [f"no longer generated: {p}" for p in sorted(committed - fresh)]
        problems += [
            f"stale: {p}" for p in sorted(fresh & committed) if not filecmp.cmp(fresh_root / p, OUT / p, shallow=False)
        ]
    if problems:
        print("generated stubs are stale; run `python scripts/gen_protos.py`:\n  " + "\n  ".join(problems))
        return 1
    print("generated stubs are fresh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
