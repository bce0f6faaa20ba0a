"""The CPU emulation and the backend's guards catch what would go wrong on a device.

A parity harness that accepted a wrong launch would prove nothing: these
tests feed it the mistakes CuPy lets through silently (a Python int where the
kernel takes ``long long``, a strided view, a partial warp) and check they are
refused, and that the backend refuses to compile on the hot path.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.kernels.kernel_harness import TINY, CpuRuntime, KernelLaunchError
from streamguard.backends.cuda_backend import CudaBackend
from streamguard.backends.cuda_runtime import LaunchConfig


@pytest.fixture
def cpu_backend(cpu_modules: dict) -> CudaBackend:
    backend = CudaBackend(launch=TINY, runtime=CpuRuntime(cpu_modules))
    backend.warmup()
    return backend


def _pack_args(n: int = 3, bits: int = 64):
    proj = np.ones((n, bits), np.float32)
    return proj, np.zeros(bits, np.float32), np.int64(n), np.int64(bits), np.zeros((n, bits // 64), np.uint64)


def test_a_python_int_where_the_kernel_takes_long_long_is_refused(cpu_backend: CudaBackend) -> None:
    proj, offsets, n, bits, out = _pack_args()
    with pytest.raises(KernelLaunchError, match="numpy int64 scalar"):
        cpu_backend.launcher("pack_sign_bits")((1, 1, 1), (32, 1, 1), (proj, offsets, 3, bits, out))
    with pytest.raises(KernelLaunchError, match="numpy int64 scalar"):
        cpu_backend.launcher("pack_sign_bits")((1, 1, 1), (32, 1, 1), (proj, offsets, np.int32(3), bits, out))


def test_wrong_dtype_strided_or_read_only_arrays_are_refused(cpu_backend: CudaBackend) -> None:
    proj, offsets, n, bits, out = _pack_args()
    launch = cpu_backend.launcher("pack_sign_bits")
    with pytest.raises(KernelLaunchError, match="needs float32"):
        launch((1, 1, 1), (32, 1, 1), (proj.astype(np.float64), offsets, n, bits, out))
    with pytest.raises(KernelLaunchError, match="not C-contiguous"):
        launch((1, 1, 1), (32, 1, 1), (np.ones((3, 128), np.float32)[:, ::2], offsets, n, bits, out))
    out.flags.writeable = False
    with pytest.raises(KernelLaunchError, match="read-only"):
        launch((1, 1, 1), (32, 1, 1), (proj, offsets, n, bits, out))


def test_a_warp_intrinsic_in_a_partial_warp_is_refused(cpu_backend: CudaBackend) -> None:
    """On a device, __ballot_sync with the full mask in a 40-thread block is undefined behaviour."""
    with pytest.raises(KernelLaunchError, match="partial warp"):
        cpu_backend.launcher("pack_sign_bits")((1, 1, 1), (40, 1, 1), _pack_args())


def test_launch_limits_are_the_device_ones(cpu_backend: CudaBackend) -> None:
    with pytest.raises(KernelLaunchError, match="bad launch"):
        cpu_backend.launcher("pack_sign_bits")((1, 1, 1), (2048, 1, 1), _pack_args())
    with pytest.raises(KernelLaunchError, match="grid"):
        cpu_backend.launcher("pack_sign_bits")((1, 70_000, 1), (32, 1, 1), _pack_args())


def test_kernels_are_compiled_in_warmup_never_on_the_first_batch(cpu_modules: dict) -> None:
    runtime = CpuRuntime(cpu_modules)
    backend = CudaBackend(launch=TINY, runtime=runtime)
    with pytest.raises(RuntimeError, match="warmup"):
        backend.signatures(np.ones((2, 4), np.float32), np.ones((4, 64), np.float32), np.zeros(64, np.float32))
    backend.warmup()
    backend.warmup()  # idempotent
    assert not runtime.launched


def test_state_arrays_must_be_updatable_in_place(cpu_backend: CudaBackend) -> None:
    sigs, slots = np.zeros((2, 1), np.uint64), np.zeros(2, np.int64)
    window_sig, window_prev = np.zeros((8, 1), np.uint64), np.full(8, -1, np.int64)
    with pytest.raises(TypeError, match="head must be a C-contiguous 1-d int64"):
        cpu_backend.dup_scan(sigs, slots, window_sig, window_prev, np.zeros(1, np.int32), 0, 4)
    with pytest.raises(TypeError, match="window_sig must be a C-contiguous"):
        cpu_backend.dup_scan(sigs, slots, np.zeros((8, 2), np.uint64)[:, ::2], window_prev, np.zeros(1, np.int64), 0, 4)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("threads", 0, "threads"),
        ("warps_per_block", 33, "warps_per_block"),
        ("reduce_threads", 96, "power of two"),
        ("reduce_threads", 512, "power of two"),
        ("max_blocks", 0, "max_blocks"),
    ],
)
def test_launch_config_is_validated(field: str, value: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LaunchConfig(**{field: value})
