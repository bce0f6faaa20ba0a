#!/usr/bin/env python3
"""Prebuild every ``kernels/*.cu`` into a fat binary, so a container starts without compiling.

The text built is exactly what the CUDA backend would hand NVRTC at start-up
(``streamguard.backends.kernels.assemble``), with the same options; each
binary is named ``<stem>-<source digest>.fatbin``, so the backend loads it
only for that exact source (``$STREAMGUARD_KERNEL_CACHE``) and compiles any
other. Each binary holds SASS for every ``--arch`` and the PTX of the newest,
which the driver JIT-compiles for a newer GPU.

Needs nvcc, not a GPU: the CUDA Dockerfile runs it in a devel build stage.

Usage: ``python scripts/build_kernel_cache.py --out DIR [--arch 80 --arch 90] [--nvcc PATH]``
Exit status: 0 when every file built, 1 when one did not, 2 when nvcc is missing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.check_kernels import ARCHS, find_nvcc  # noqa: E402 - after the path is set
from streamguard.backends.kernels import COMPILE_OPTIONS, kernel_sources, source_digest  # noqa: E402


def nvcc_command(nvcc: str, source: Path, out: Path, archs: tuple[str, ...]) -> list[str]:
    command = [nvcc, "-fatbin", *COMPILE_OPTIONS, "-Werror", "all-warnings", str(source), "-o", str(out)]
    for arch in archs:
        command += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    newest = max(archs, key=int)
    command += ["-gencode", f"arch=compute_{newest},code=compute_{newest}"]
    return command


def build(nvcc: str, out_dir: Path, archs: tuple[str, ...] = ARCHS) -> list[Path]:
    """Build every kernel file into ``out_dir``; returns the binaries. Raises ``RuntimeError`` on a failure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    built = []
    with tempfile.TemporaryDirectory(prefix="streamguard-kernels-") as tmp:
        for stem, code in kernel_sources().items():
            source = Path(tmp) / f"{stem}.cu"
            source.write_text(code, encoding="utf-8")
            target = out_dir / f"{stem}-{source_digest(code)}.fatbin"
            run = subprocess.run(nvcc_command(nvcc, source, target, archs), capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"nvcc failed on kernels/{stem}.cu:\n{run.stdout}{run.stderr}")
            built.append(target)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory of the binaries ($STREAMGUARD_KERNEL_CACHE)")
    parser.add_argument("--arch", action="append", help="SM architecture, repeatable (default: 80 and 90)")
    parser.add_argument("--nvcc", help="path to nvcc (default: $NVCC, PATH, $CUDA_HOME/bin)")
    args = parser.parse_args(argv)
    nvcc = find_nvcc(args.nvcc)
    if nvcc is None:
        print("build_kernel_cache: nvcc not found (set --nvcc, $NVCC or $CUDA_HOME)", file=sys.stderr)
        return 2
    try:
        built = build(nvcc, args.out, tuple(args.arch or ARCHS))
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    for path in built:
        print(f"{path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
