"""Regenerate gen/ from protos/: Python messages, gRPC stubs, .pyi stubs and Envoy's descriptor set.

Run with the project's virtual environment (pinned grpcio-tools and mypy-protobuf, so the
output is byte-for-byte reproducible and CI can check it):

    .venv/bin/python scripts/gen_protos.py           # regenerate
    .venv/bin/python scripts/gen_protos.py --check   # fail if gen/ is stale

It also stages the googleapis protos from the googleapis-common-protos wheel into
build/googleapis, the local buf module that buf.yaml names (buf cannot fetch them offline).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GEN = ROOT / "gen"
DESCRIPTOR = "descriptor/recsys.binpb"
GOOGLEAPIS_STAGE = ROOT / "build" / "googleapis"
GOOGLEAPIS_FILES = ("google/api/annotations.proto", "google/api/http.proto")
# Status detail types the services attach (ingest's google.rpc.BadRequest): Envoy's transcoder
# writes a status's details as JSON only when their types are in its descriptor set.
DESCRIPTOR_EXTRAS = ("google/rpc/error_details.proto",)


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def stage_googleapis() -> None:
    """Copy the google.api protos out of the wheel, where buf can use them as a module."""
    for name in GOOGLEAPIS_FILES:
        target = GOOGLEAPIS_STAGE / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_site_packages() / name, target)


def generate(out: Path) -> None:
    """Run protoc over every .proto under protos/ into out/python and out/descriptor."""
    python_out = out / "python"
    python_out.mkdir(parents=True)
    (out / DESCRIPTOR).parent.mkdir(parents=True)
    bin_dir = Path(sys.executable).parent
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    paths = [
        f"--proto_path={PROTOS}",
        f"--proto_path={GOOGLEAPIS_STAGE}",
        f"--proto_path={Path(grpc_tools.__file__).parent / '_proto'}",
        f"--proto_path={_site_packages()}",  # DESCRIPTOR_EXTRAS, from googleapis-common-protos
    ]
    args = [
        "protoc",
        *paths,
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={python_out}",
        f"--grpc_python_out={python_out}",
        f"--mypy_out={python_out}",
        f"--mypy_grpc_out={python_out}",
        *sources,
    ]
    descriptor_args = [
        "protoc", *paths, f"--descriptor_set_out={out / DESCRIPTOR}", "--include_imports",
        *sources, *DESCRIPTOR_EXTRAS,
    ]
    if protoc.main(args) != 0 or protoc.main(descriptor_args) != 0:
        raise SystemExit("protoc failed")
    for package in (p for p in python_out.rglob("*") if p.is_dir()):
        (package / "__init__.py").touch()
        (package / "py.typed").touch()


def _files(root: Path) -> set[Path]:
    return {
        p.relative_to(root) for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def _differences(a: Path, b: Path) -> list[str]:
    files_a, files_b = _files(a), _files(b)
    changed = [p for p in files_a & files_b if not filecmp.cmp(a / p, b / p, shallow=False)]
    return sorted(str(p) for p in (files_a ^ files_b) | set(changed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if gen/ differs from protos/")
    check = parser.parse_args().check
    stage_googleapis()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "gen"
        generate(fresh)
        stale = _differences(fresh, GEN)
        if check:
            if stale:
                raise SystemExit(
                    "gen/ is stale; run .venv/bin/python scripts/gen_protos.py and commit:\n  "
                    + "\n  ".join(stale)
                )
            print("gen/ is up to date")
            return
        shutil.rmtree(GEN, ignore_errors=True)
        shutil.copytree(fresh, GEN)
    print(f"regenerated gen/ ({len(stale)} files changed)")


if __name__ == "__main__":
    main()
