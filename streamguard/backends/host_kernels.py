"""Build ``kernels/*.cu`` for the CPU (g++ behind ``kernels/cpu_compat.h``) and launch them through ctypes.

Shared by the two ways the CUDA sources run without a device: the kernel
parity harness (``tests/kernels/kernel_harness.py``, NumPy arrays straight into
the kernels) and the emulated device (:mod:`streamguard.backends.emulated_cupy`,
a stand-in for CuPy under the unchanged ``CupyRuntime``). Neither is used on a
machine with a GPU.

A launch is stricter than CuPy about the ABI, on purpose: every argument is
checked against the entry point's C signature (pointer dtype, contiguity,
const-ness, and scalars as NumPy scalars of the exact width), because CuPy
would pass a mismatched argument silently and the kernel would read garbage.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamguard.backends.kernels import EntryPoint, Param, entry_points, kernel_dir

CXX_FLAGS = (
    "-std=c++20",
    "-O1",
    "-pthread",
    "-shared",
    "-fPIC",
    "-ffp-contract=off",  # products rounded on their own, as __fmul_rn and numpy do
    "-Wall",
    "-Wextra",
    "-Werror",
)

# C type of a kernel parameter -> (NumPy dtype, ctypes scalar type).
C_TYPES: dict[str, tuple[np.dtype, Any]] = {
    "float": (np.dtype(np.float32), ctypes.c_float),
    "double": (np.dtype(np.float64), ctypes.c_double),
    "int": (np.dtype(np.int32), ctypes.c_int),
    "unsigned": (np.dtype(np.uint32), ctypes.c_uint),
    "unsigned int": (np.dtype(np.uint32), ctypes.c_uint),
    "long long": (np.dtype(np.int64), ctypes.c_longlong),
    "unsigned long long": (np.dtype(np.uint64), ctypes.c_ulonglong),
    "unsigned short": (np.dtype(np.uint16), ctypes.c_ushort),
}

COMPAT_HEADER = "cpu_compat.h"


class KernelLaunchError(RuntimeError):
    """A launch that CUDA would reject or that would misbehave there (bad ABI, partial warp...)."""


_STATUS = {
    1: "bad launch configuration",
    2: "warp intrinsic in a partial warp",
    3: "warp intrinsic with a partial mask",
}


def launcher_source(source: str) -> str:
    """The assembled ``.cu`` source plus one ``extern "C"`` launcher per entry point."""
    lines = [source, "", '#line 1 "generated-cpu-launchers.cpp"']
    for entry in entry_points(source):
        params = "".join(f", {p.ctype} {p.name}" for p in entry.params)
        args = ", ".join(p.name for p in entry.params)
        lines += [
            f'extern "C" int sgcpu_launch_{entry.name}(unsigned gx, unsigned gy, unsigned gz, '
            f"unsigned bx, unsigned by, unsigned bz{params}) {{",
            f"  return sgcpu::launch(dim3(gx, gy, gz), dim3(bx, by, bz), [=] {{ {entry.name}({args}); }});",
            "}",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class BuiltModule:
    """One ``.cu`` file compiled for the CPU.

    digest : sha256 of the assembled source it was built from (what a loader compares)
    """

    stem: str
    digest: str
    library: ctypes.CDLL
    entries: list[EntryPoint]


def text_digest(source: str) -> str:
    """sha256 (hex) of an assembled source."""
    return hashlib.sha256(source.encode()).hexdigest()


def _build_key(cpp_text: str, toolchain: bytes) -> str:
    """Names a library by everything that goes into it: the text, the header, the flags, the compiler."""
    digest = hashlib.sha256()
    for part in (cpp_text.encode(), toolchain):
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def build(sources: Mapping[str, str], workdir: Path) -> dict[str, BuiltModule]:
    """Compile every ``{stem: assembled source}`` to a shared library in ``workdir`` (in parallel).

    A library is named by the digest of everything that goes into it (source,
    ``cpu_compat.h``, flags, compiler version), so a ``workdir`` that already
    holds it is a cache: nothing is recompiled, and an edited source or
    header is never served a stale build. Writes are atomic (a temporary name,
    then a rename), so processes may share a ``workdir``.

    Raises
    ------
    RuntimeError
        Without g++, or with g++'s diagnostics (file and line in ``kernels/``) when a build fails.
    """
    cxx = shutil.which("g++")
    if cxx is None:
        raise RuntimeError("g++ is needed to run the kernels on the CPU")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    version = subprocess.run([cxx, "-dumpfullversion"], capture_output=True, text=True, check=False).stdout
    header = (kernel_dir() / COMPAT_HEADER).read_bytes()
    toolchain = b"\0".join([header, "\0".join(CXX_FLAGS).encode(), cxx.encode(), version.strip().encode()])
    jobs: dict[str, tuple[Path, Path | None, Path | None, subprocess.Popen[str] | None]] = {}
    for stem, source in sources.items():
        text = launcher_source(source)
        lib = workdir / f"lib{stem}_cpu_{_build_key(text, toolchain)}.so"
        if lib.is_file():
            jobs[stem] = (lib, None, None, None)
            continue
        tag = f"{os.getpid()}-{id(text):x}"
        cpp = workdir / f"{stem}_cpu_{tag}.cpp"
        partial_lib = workdir / f"{lib.name}.{tag}.tmp"
        cpp.write_text(text, encoding="utf-8")
        command = [cxx, *CXX_FLAGS, "-I", str(kernel_dir()), str(cpp), "-o", str(partial_lib)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        jobs[stem] = (lib, cpp, partial_lib, process)
    built = {}
    for stem, (lib, cpp, partial_lib, process) in jobs.items():
        if process is not None:
            output, _ = process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"g++ failed on kernels/{stem}.cu:\n{output}")
            os.replace(partial_lib, lib)
            cpp.unlink()
        built[stem] = _load(stem, sources[stem], lib)
    return built


def _load(stem: str, source: str, lib: Path) -> BuiltModule:
    library = ctypes.CDLL(str(lib))
    entries = entry_points(source)
    for entry in entries:
        function = getattr(library, f"sgcpu_launch_{entry.name}")
        function.restype = ctypes.c_int
        function.argtypes = [ctypes.c_uint] * 6 + [
            ctypes.c_void_p if p.is_pointer else C_TYPES[p.base][1] for p in entry.params
        ]
    return BuiltModule(stem, text_digest(source), library, entries)


def launch(module: BuiltModule, entry: EntryPoint, grid: tuple, block: tuple, args: tuple) -> None:
    """Run ``entry`` of ``module`` over ``grid`` x ``block`` with host ``args`` (NumPy arrays and scalars).

    Raises
    ------
    KernelLaunchError
        On an argument that does not match the C signature, launch dimensions
        a device would refuse, or a warp intrinsic the device would misexecute.
    """
    if len(args) != len(entry.params):
        raise KernelLaunchError(f"{entry.name}: {len(args)} arguments for {len(entry.params)} parameters")
    dims = [*_dim3(entry.name, "grid", grid), *_dim3(entry.name, "block", block)]
    converted = [_convert(entry.name, p, a) for p, a in zip(entry.params, args, strict=True)]
    status = getattr(module.library, f"sgcpu_launch_{entry.name}")(*dims, *converted)
    if status:
        raise KernelLaunchError(f"{entry.name}: {_STATUS.get(status, status)} (grid {grid}, block {block})")


def _dim3(name: str, what: str, dims: tuple) -> list[int]:
    if not 1 <= len(dims) <= 3 or not all(isinstance(v, int) and v >= 1 for v in dims):
        raise KernelLaunchError(f"{name}: {what} must be 1 to 3 positive Python ints, got {dims!r}")
    if what == "grid" and (dims[0] >= 2**31 or any(v > 65535 for v in dims[1:])):
        raise KernelLaunchError(f"{name}: grid {dims} exceeds the device limits")
    return [*dims, *[1] * (3 - len(dims))]


def _convert(name: str, param: Param, arg: Any) -> Any:
    dtype, ctype = C_TYPES[param.base]
    if param.is_pointer:
        if not isinstance(arg, np.ndarray):
            raise KernelLaunchError(f"{name}({param.name}): expected an array, got {type(arg).__name__}")
        if arg.dtype != dtype:
            raise KernelLaunchError(f"{name}({param.name}): {param.ctype} needs {dtype}, got {arg.dtype}")
        if not arg.flags.c_contiguous:
            raise KernelLaunchError(f"{name}({param.name}): array is not C-contiguous")
        if not param.is_const and not arg.flags.writeable:
            raise KernelLaunchError(f"{name}({param.name}): output array is read-only")
        return ctypes.c_void_p(arg.ctypes.data)
    if not isinstance(arg, np.generic) or arg.dtype != dtype:
        raise KernelLaunchError(
            f"{name}({param.name}): {param.ctype} needs a numpy {dtype} scalar, got {type(arg).__name__}"
            f"{'' if not isinstance(arg, np.generic) else ' ' + str(arg.dtype)}"
        )
    return ctype(arg.item())
