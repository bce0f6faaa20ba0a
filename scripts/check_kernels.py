#!/usr/bin/env python3
"""Compile every ``kernels/*.cu`` with nvcc for sm_80 and sm_90, warnings as errors, and report its resources.

The text compiled is exactly what the CUDA backend hands NVRTC at start-up
(``streamguard.backends.kernels.assemble``: the file with ``common.cuh``
inlined under ``#line`` directives), so a message points at ``kernels/<file>``.
``-Xptxas -v`` reports registers, shared memory, stack and spills per entry
point; they are printed as a table.

When a libnvrtc is available (the ``nvidia-cuda-nvrtc-cu12`` wheel that
CuPy uses, ``$NVRTC_LIBRARY``, or the toolkit), the same text is also compiled
by NVRTC itself, the compiler ``cupy.RawModule`` runs at start-up.

Exit status: 0 when every file compiles cleanly with no spill and every
``extern "C" __global__`` entry point was compiled for every architecture;
1 otherwise; 2 when nvcc is missing.

Usage: ``python scripts/check_kernels.py [--nvcc PATH] [--arch 80 --arch 90] [--json FILE]``
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from streamguard.backends.kernels import assemble, entry_points, kernel_dir, kernel_stems  # noqa: E402

ARCHS = ("80", "90")
_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?")


@dataclass
class KernelStats:
    """ptxas' report on one entry point for one architecture."""

    file: str
    kernel: str
    arch: str
    registers: int = 0
    shared_bytes: int = 0
    stack_bytes: int = 0
    spill_stores: int = 0
    spill_loads: int = 0

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0


@dataclass
class FileReport:
    file: str
    command: list[str]
    returncode: int
    output: str
    kernels: list[KernelStats] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def find_nvcc(explicit: str | None = None) -> str | None:
    """nvcc from ``--nvcc``, ``$NVCC``, ``PATH``, ``$CUDA_HOME/bin`` or /usr/local/cuda/bin, else None."""
    candidates = [explicit, os.environ.get("NVCC"), shutil.which("nvcc")]
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            candidates.append(str(Path(home) / "bin" / "nvcc"))
    return next((c for c in candidates if c and Path(c).is_file() and os.access(c, os.X_OK)), None)


def parse_ptxas(file: str, output: str) -> list[KernelStats]:
    """Per-entry-point resources from ``-Xptxas -v`` output (device functions that were not inlined are skipped)."""
    stats: list[KernelStats] = []
    current: KernelStats | None = None
    for line in output.splitlines():
        if match := _ENTRY.search(line):
            current = KernelStats(file, match.group(1), match.group(2))
            stats.append(current)
        elif current is not None and (match := _FRAME.search(line)):
            current.stack_bytes, current.spill_stores, current.spill_loads = map(int, match.groups())
        elif current is not None and (match := _USED.search(line)):
            current.registers = int(match.group(1))
            current.shared_bytes = int(match.group(2) or 0)
            current = None
    return stats


def check_file(nvcc: str, stem: str, archs: tuple[str, ...], workdir: Path) -> FileReport:
    """Compile one kernel file for ``archs``; collect warnings, errors, spills and missing entry points."""
    source = assemble(stem)
    path = workdir / f"{stem}.cu"
    path.write_text(source, encoding="utf-8")
    command = [nvcc, "-std=c++17", "-c", str(path), "-o", str(workdir / f"{stem}.o"), "-I", str(kernel_dir())]
    for arch in archs:
        command += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    command += [
        "-Xptxas", "-v,-warn-spills,-warn-lmem-usage",
        "-Werror", "all-warnings",
        "-Xcompiler", "-Wall,-Wextra,-Werror",
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    output = run.stdout + run.stderr
    report = FileReport(
        f"kernels/{stem}.cu", command, run.returncode, output, parse_ptxas(f"kernels/{stem}.cu", output)
    )
    if run.returncode != 0:
        report.problems.append(f"nvcc exited {run.returncode}")
    for line in output.splitlines():
        if re.search(r"\bwarning\b", line, re.IGNORECASE):
            report.problems.append(f"warning: {line.strip()}")
    for kernel in report.kernels:
        if kernel.spills:
            report.problems.append(
                f"{kernel.kernel} ({kernel.arch}) spills {kernel.spill_stores}/{kernel.spill_loads} bytes"
            )
    compiled = {(k.kernel, k.arch) for k in report.kernels}
    for entry in entry_points(source):
        for arch in archs:
            if (entry.name, f"sm_{arch}") not in compiled and run.returncode == 0:
                report.problems.append(f"entry point {entry.name} missing from the sm_{arch} ptxas report")
    return report


def check(nvcc: str, archs: tuple[str, ...] = ARCHS, stems: list[str] | None = None) -> list[FileReport]:
    """Check every kernel file (or ``stems``); one report per file."""
    with tempfile.TemporaryDirectory(prefix="check-kernels-") as tmp:
        return [check_file(nvcc, stem, archs, Path(tmp)) for stem in (stems or kernel_stems())]


def find_nvrtc() -> str | None:
    """libnvrtc from ``$NVRTC_LIBRARY``, the ``nvidia-cuda-nvrtc-cu12`` wheel CuPy uses, or the toolkit; else None."""
    candidates: list[Path] = []
    if os.environ.get("NVRTC_LIBRARY"):
        candidates.append(Path(os.environ["NVRTC_LIBRARY"]))
    try:
        import nvidia.cuda_nvrtc  # noqa: PLC0415 - optional: the wheel cupy-cuda12x[ctk] installs

        candidates += sorted(Path(next(iter(nvidia.cuda_nvrtc.__path__))).glob("lib/libnvrtc.so*"))
    except ImportError:
        pass
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home:
            candidates += sorted(Path(home).glob("lib64/libnvrtc.so*"))
    found = ctypes.util.find_library("nvrtc")
    return next((str(c) for c in candidates if c.is_file() and "builtins" not in c.name), found)


def check_nvrtc(library: str, archs: tuple[str, ...] = ARCHS, stems: list[str] | None = None) -> list[FileReport]:
    """Compile the assembled sources with NVRTC itself, as ``cupy.RawModule`` does (no host compiler, no
    include path): the nvcc check cannot see a construct that only NVRTC rejects. A warning fails."""
    nvrtc = ctypes.CDLL(library)
    reports = []
    for stem in stems or kernel_stems():
        source = assemble(stem)
        report = FileReport(f"kernels/{stem}.cu", [library], 0, "")
        for arch in archs:
            program = ctypes.c_void_p()
            name = f"kernels/{stem}.cu".encode()
            if nvrtc.nvrtcCreateProgram(ctypes.byref(program), source.encode(), name, 0, None, None) != 0:
                report.problems.append("nvrtcCreateProgram failed")
                continue
            options = [b"--std=c++17", f"--gpu-architecture=compute_{arch}".encode()]
            status = nvrtc.nvrtcCompileProgram(program, len(options), (ctypes.c_char_p * len(options))(*options))
            size = ctypes.c_size_t()
            nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            nvrtc.nvrtcGetProgramLog(program, log)
            nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
            text = log.value.decode(errors="replace").strip()
            report.output += f"[compute_{arch}] status {status}\n{text}\n"
            if status != 0:
                report.returncode = status
                report.problems.append(f"NVRTC compute_{arch}: status {status}")
            if re.search(r"\bwarning\b", text, re.IGNORECASE):
                report.problems.append(f"NVRTC compute_{arch}: warnings")
        reports.append(report)
    return reports


def format_table(reports: list[FileReport]) -> str:
    header = ("file", "kernel", "arch", "regs", "smem B", "stack B", "spill st/ld")
    rows = [
        (
            k.file,
            k.kernel,
            k.arch,
            str(k.registers),
            str(k.shared_bytes),
            str(k.stack_bytes),
            f"{k.spill_stores}/{k.spill_loads}",
        )
        for report in reports
        for k in report.kernels
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvcc", help="path to nvcc (default: $NVCC, PATH, $CUDA_HOME/bin)")
    parser.add_argument("--arch", action="append", help="SM architecture, repeatable (default: 80 and 90)")
    parser.add_argument("--json", type=Path, help="also write the reports as JSON to this file")
    args = parser.parse_args(argv)
    nvcc = find_nvcc(args.nvcc)
    if nvcc is None:
        print("check_kernels: nvcc not found (set --nvcc, $NVCC or $CUDA_HOME)", file=sys.stderr)
        return 2
    archs = tuple(args.arch or ARCHS)
    reports = check(nvcc, archs)
    print(format_table(reports))
    failed = [r for r in reports if not r.ok]
    nvrtc = find_nvrtc()
    if nvrtc is None:
        print("\nNVRTC: no libnvrtc found (pip install nvidia-cuda-nvrtc-cu12, or set NVRTC_LIBRARY): not checked")
    else:
        nvrtc_reports = check_nvrtc(nvrtc, archs)
        nvrtc_failed = [r for r in nvrtc_reports if not r.ok]
        failed += nvrtc_failed
        print(f"\nNVRTC ({nvrtc}): {len(nvrtc_reports) - len(nvrtc_failed)} of {len(nvrtc_reports)} files clean")
    for report in failed:
        print(f"\n{report.file}: FAILED\n  " + "\n  ".join(report.problems), file=sys.stderr)
        print(report.output, file=sys.stderr)
    if args.json:
        payload = [
            {
                **{k: v for k, v in asdict(r).items() if k != "kernels"},
                "kernels": [asdict(k) for k in r.kernels],
                "ok": r.ok,
            }
            for r in reports
        ]
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    print(
        f"\n{len(reports) - len(failed)} of {len(reports)} kernel files clean ({nvcc}, sm_{', sm_'.join(args.arch or ARCHS)})"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
