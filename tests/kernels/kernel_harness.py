"""Execute ``kernels/*.cu`` on the CPU: g++ behind ``kernels/cpu_compat.h``, called through ctypes.

:class:`CpuRuntime` is a :class:`streamguard.backends.cuda_runtime.KernelRuntime`:
plugged into ``CudaBackend``, it runs the backend's own host code (key
encoding, sorts, GEMMs, grid sizes, argument order) with NumPy arrays and the
*same assembled source* that NVRTC compiles on a device, so a parity test
through it checks the kernels and their launch sequence together.

The build and the launch (with its strict ABI checks: every argument against
the entry point's C signature, because CuPy would pass a mismatched argument
silently) live in :mod:`streamguard.backends.host_kernels`, shared with the
emulated device that runs ``CupyRuntime`` itself without a GPU
(:mod:`streamguard.backends.emulated_cupy`, ``pytest -m emulated_gpu``).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any

import numpy as np

from streamguard.backends.cuda_runtime import LaunchConfig
from streamguard.backends.host_kernels import (
    C_TYPES,
    CXX_FLAGS,
    BuiltModule,
    KernelLaunchError,
    build,
    launch,
    launcher_source,
    text_digest,
)
from streamguard.backends.kernels import EntryPoint

__all__ = [
    "C_TYPES",
    "CXX_FLAGS",
    "TINY",
    "BuiltModule",
    "CpuRuntime",
    "KernelLaunchError",
    "build",
    "launcher_source",
]

TINY = LaunchConfig(threads=8, warps_per_block=2, column_threads=8, reduce_threads=4, max_blocks=3)
"""Launches of the kernel tests: blocks of 8 threads (2 warps for warp kernels, 4 for the reduction
tree), at most 3 blocks per grid, so tails, grid-stride loops and multi-block paths run on small data."""


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
            if module is None or module.digest != text_digest(source):
                raise RuntimeError(f"kernels/{stem}.cu changed since the CPU build; rebuild the harness")
            for entry in module.entries:
                launchers[entry.name] = partial(self._launch, module, entry)
        return launchers

    def _launch(self, module: BuiltModule, entry: EntryPoint, grid: tuple, block: tuple, args: tuple) -> None:
        launch(module, entry, grid, block, args)
        self.launched[entry.name] += 1

    @contextlib.contextmanager
    def on_stream(self) -> Iterator[None]:
        yield

    def as_device(self, array: Any, dtype: Any = None) -> np.ndarray:
        return np.ascontiguousarray(array, dtype=dtype)

    def upload(self, host: np.ndarray) -> np.ndarray:
        return np.array(host, order="C", copy=True)  # a device copy is a copy

    def download(self, array: Any) -> np.ndarray:
        return np.array(array, copy=True)
