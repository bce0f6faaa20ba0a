"""Execute ``kernels/*.cu`` on the CPU: g++ behind ``kernels/cpu_compat.h``, called through ctypes.

:class:`CpuRuntime` is a :class:`streamguard.backends.cuda_backend.KernelRuntime`:
plugged into ``CudaBackend``, it runs the backend's own host code (key
encoding, sorts, GEMMs, grid sizes, argument order) with NumPy arrays and the
*same assembled source* that NVRTC compiles on a device, so a parity test
through it checks the kernels and their launch sequence together.

It is stricter than CuPy about the launch ABI, on purpose: every argument is
checked against the entry point's C signature (pointer dtype, contiguity,
const-ness, and scalars as NumPy scalars of the exact width), because CuPy
would pass a mismatched argument silently and the kernel would read garbage.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from streamguard.backends.cuda_backend import LaunchConfig
from streamguard.backends.kernels import EntryPoint, Param, entry_points, kernel_dir

TINY = LaunchConfig(threads=8, warps_per_block=2, column_threads=8, reduce_threads=4, max_blocks=3)
"""Launches of the kernel tests: blocks of 8 threads (2 warps for warp kernels, 4 for the reduction
tree), at most 3 blocks per grid, so tails, grid-stride loops and multi-block paths run on small data."""

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
    """One ``.cu`` file compiled for the CPU."""

    stem: str
    digest: str
    library: ctypes.CDLL
    entries: list[EntryPoint]


def _digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def build(sources: Mapping[str, str], workdir: Path) -> dict[str, BuiltModule]:
    """Compile every ``{stem: assembled source}`` to a shared library in ``workdir`` (in parallel).

    Raises
    ------
    RuntimeError
        With g++'s diagnostics (file and line in ``kernels/``) when a build fails.
    """
    cxx = shutil.which("g++")
    if cxx is None:
        raise RuntimeError("g++ is needed to run the kernels on the CPU")
    jobs = {}
    for stem, source in sources.items():
        cpp = workdir / f"{stem}_cpu.cpp"
        lib = workdir / f"lib{stem}_cpu_{_digest(source)[:12]}.so"
        cpp.write_text(launcher_source(source), encoding="utf-8")
        command = [cxx, *CXX_FLAGS, "-I", str(kernel_dir()), str(cpp), "-o", str(lib)]
        jobs[stem] = (lib, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    built = {}
    for stem, (lib, process) in jobs.items():
        output, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"g++ failed on kernels/{stem}.cu:\n{output}")
        library = ctypes.CDLL(str(lib))
        entries = entry_points(sources[stem])
        for entry in entries:
            function = getattr(library, f"sgcpu_launch_{entry.name}")
            function.restype = ctypes.c_int
            function.argtypes = [ctypes.c_uint] * 6 + [
                ctypes.c_void_p if p.is_pointer else C_TYPES[p.base][1] for p in entry.params
            ]
        built[stem] = BuiltModule(stem, _digest(sources[stem]), library, entries)
    return built


class CpuRuntime:
    """:class:`KernelRuntime` that runs the g++-built kernels on NumPy arrays.

    ``launched`` counts launches per entry point, so a test can prove it ran
    the kernels it claims to cover.
    """

    xp = np

    def __init__(self, modules: Mapping[str, BuiltModule]) -> None:
        self._modules = dict(modules)
        self.launched: Counter[str] = Counter()

    def load(self, sources: Mapping[str, str]) -> dict[str, Any]:
        launchers = {}
        for stem, source in sources.items():
            module = self._modules.get(stem)
            if module is None or module.digest != _digest(source):
                raise RuntimeError(f"kernels/{stem}.cu changed since the CPU build; rebuild the harness")
            for entry in module.entries:
                launchers[entry.name] = partial(self._launch, module, entry)
        return launchers

    def _launch(self, module: BuiltModule, entry: EntryPoint, grid: tuple, block: tuple, args: tuple) -> None:
        if len(args) != len(entry.params):
            raise KernelLaunchError(f"{entry.name}: {len(args)} arguments for {len(entry.params)} parameters")
        dims = [*self._dim3(entry.name, "grid", grid), *self._dim3(entry.name, "block", block)]
        converted = [self._convert(entry.name, p, a) for p, a in zip(entry.params, args, strict=True)]
        status = getattr(module.library, f"sgcpu_launch_{entry.name}")(*dims, *converted)
        if status:
            raise KernelLaunchError(f"{entry.name}: {_STATUS.get(status, status)} (grid {grid}, block {block})")
        self.launched[entry.name] += 1

    @staticmethod
    def _dim3(name: str, what: str, dims: tuple) -> list[int]:
        if not 1 <= len(dims) <= 3 or not all(isinstance(v, int) and v >= 1 for v in dims):
            raise KernelLaunchError(f"{name}: {what} must be 1 to 3 positive Python ints, got {dims!r}")
        if what == "grid" and (dims[0] >= 2**31 or any(v > 65535 for v in dims[1:])):
            raise KernelLaunchError(f"{name}: grid {dims} exceeds the device limits")
        return [*dims, *[1] * (3 - len(dims))]

    @staticmethod
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

    @contextlib.contextmanager
    def on_stream(self) -> Iterator[None]:
        yield

    def as_device(self, array: Any, dtype: Any = None) -> np.ndarray:
        return np.ascontiguousarray(array, dtype=dtype)

    def upload(self, host: np.ndarray) -> np.ndarray:
        return np.array(host, order="C", copy=True)  # a device copy is a copy

    def download(self, array: Any) -> np.ndarray:
        return np.array(array, copy=True)
