"""The cuda backend's own Python code (``CupyRuntime`` and ``CudaBackend``) run end to end without a GPU.

``tests/kernels`` replaces ``CupyRuntime`` by a NumPy runtime; here it runs
unchanged over the emulated device of :mod:`streamguard.backends.emulated_cupy`
(CuPy's rules for device memory, streams and pinned buffers; the same ``.cu``
text compiled by g++). The replay test also has a ``gpu`` case that runs the
real CuPy on a device (``pytest -m "gpu or emulated_gpu"``, scripts/gpu_check.sh).

The emulated kernels run one OS thread per CUDA thread, so a request costs
~10 ms here: the streams are the first ~1,200 requests of small simulations.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from streamguard import cli
from streamguard.backends import CUDA_EMULATE_ENV, BackendUnavailable, create_backend, cuda_unavailable_reason
from streamguard.backends.cuda_backend import CudaBackend
from streamguard.backends.cuda_runtime import CupyRuntime
from streamguard.backends.emulated_cupy import CACHE_ENV, CompileException, EmulatedDevice
from streamguard.backends.host_kernels import build
from streamguard.backends.kernels import KERNEL_CACHE_ENV, entry_points, kernel_sources, source_digest
from streamguard.backends.numpy_backend import NumpyBackend

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="the emulated device compiles the kernels with g++")
pytestmark = needs_gxx

# Small and quick: a short warm-up, few cells, hour-long ticks (fewer, larger batches), and
# lenient alert lines so that ~1,200 requests raise some alerts to compare.
REPLAY_CONFIG = """\
[coverage]
warmup = 600
cells = 64

[scoring]
false_alerts_per_10k = 2000.0
tick_ms = 1800000
min_requests = 40
min_span_ms = 1800000
confirm_ms = 600000
population_min_accounts = 10

[campaign]
group_false_alerts_per_10k = 2000.0
link_min_requests = 20
"""
REPLAY_ROWS = 1200
# (seed, scale): one-day worlds at D = 32 whose first 1,200 requests raise alerts (4 and 2 on numpy).
WORLDS = [(5, 0.05), (2, 0.03)]


@pytest.fixture(scope="session")
def emulate_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The g++ builds of ``kernels/*.cu``, made once (both files in parallel) and kept in pytest's cache."""
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    where = cache.mkdir("emulated-kernels") if cache is not None else tmp_path_factory.mktemp("emulated-kernels")
    build(kernel_sources(), where)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(where))
        yield where


@pytest.fixture
def device(emulate_cache: Path) -> EmulatedDevice:
    return EmulatedDevice(emulate_cache)


@pytest.fixture
def runtime(device: EmulatedDevice) -> CupyRuntime:
    return CupyRuntime(staging_buffers=2, cupy_module=device.cupy, cupyx_module=device.cupyx)


@pytest.fixture
def backend(runtime: CupyRuntime) -> CudaBackend:
    backend = CudaBackend(runtime=runtime)
    backend.warmup()
    return backend


# ------------------------------------------------------------------ CupyRuntime's own paths


@pytest.mark.emulated_gpu
def test_uploads_downloads_and_streams_of_cupy_runtime(runtime: CupyRuntime, device: EmulatedDevice) -> None:
    cupy = device.cupy
    rng = np.random.default_rng(0)
    hosts = [
        rng.standard_normal((5, 3)).astype(np.float32),
        rng.integers(-9, 9, 7, dtype=np.int64),
        np.arange(12, dtype=np.float16).reshape(3, 4),
        np.empty((0, 4), np.float32),
        np.array(3.5),
        rng.standard_normal((40, 33))[:, ::2],  # strided host input; larger: the staging buffer grows
        rng.integers(0, 2**63, (2, 3), dtype=np.uint64),
    ]
    # More uploads than staging buffers: every reuse of a buffer waits for the copy out of it.
    devices = [runtime.upload(h) for h in hosts]
    for h, d in zip(hosts, devices, strict=True):
        assert isinstance(d, cupy.ndarray) and d.shape == h.shape and d.dtype == h.dtype
        back = runtime.download(d)
        assert isinstance(back, np.ndarray) and not isinstance(back, cupy.ndarray)
        np.testing.assert_array_equal(back, h)
    # as_device: a device array of the right dtype is not copied; a host one is uploaded once.
    d = devices[0]
    assert runtime.as_device(d) is d
    assert runtime.as_device(d, np.float64).dtype == np.float64
    assert isinstance(runtime.as_device([1, 2, 3], np.int64), cupy.ndarray)
    # on_stream: work goes to the runtime's own non-blocking stream, and the caller's stream is back after.
    null = cupy.cuda.get_current_stream()
    with runtime.on_stream():
        assert cupy.cuda.get_current_stream() is runtime.stream
        with runtime.on_stream():  # nested scope: still ours
            assert cupy.cuda.get_current_stream() is runtime.stream
    assert cupy.cuda.get_current_stream() is null and runtime.stream.ptr != null.ptr


@pytest.mark.emulated_gpu
def test_a_staging_buffer_reused_before_its_copy_is_done_is_caught(runtime: CupyRuntime, device: EmulatedDevice) -> None:
    """The emulated pinned buffers are write-protected while a copy out of them is in flight:
    CupyRuntime's wait on the buffer's event is what lets a third upload through two buffers."""
    for _ in range(3):
        runtime.upload(np.ones(64, np.float32))
    event_type = device.cupy.cuda.Event
    synchronize = event_type.synchronize
    try:
        event_type.synchronize = lambda self: None  # a runtime that forgot to wait
        with pytest.raises(ValueError, match="read-only"):
            for _ in range(3):
                runtime.upload(np.ones(64, np.float32))
    finally:
        event_type.synchronize = synchronize


@pytest.mark.emulated_gpu
def test_device_memory_follows_cupy_rules(device: EmulatedDevice) -> None:
    """What the emulation refuses is what CuPy refuses, so host/device mix-ups surface here."""
    cupy = device.cupy
    d = cupy.arange(6, dtype=cupy.int64)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(d)
    with pytest.raises(TypeError, match="Unsupported type"):
        d + np.arange(6)
    with pytest.raises(TypeError, match="Unsupported type"):
        cupy.concatenate([d, np.arange(2)])
    with pytest.raises(TypeError, match="device arrays only"):
        cupy.ascontiguousarray(np.arange(3))
    with pytest.raises(TypeError, match="cannot be set"):
        d.set(np.zeros(6, np.float32))
    assert isinstance(d.sum(), cupy.ndarray) and int(d.sum()) == 15  # a 0-d device array, as in CuPy
    assert isinstance(d[np.array([1, 2])], cupy.ndarray)  # a host index is uploaded, as in CuPy
    d[d > 3] = 0
    np.testing.assert_array_equal(d.get(), [0, 1, 2, 3, 0, 0])


@pytest.mark.emulated_gpu
def test_kernel_faults_and_guards_surface_through_cupy_runtime(backend: CudaBackend, device: EmulatedDevice) -> None:
    cupy = device.cupy
    words, rows, capacity = 2, 16, 4
    sigs = np.zeros((3, words), np.uint64)
    window_sig = cupy.zeros((rows, words), dtype=cupy.uint64)
    window_prev = cupy.full(rows, -1, dtype=cupy.int64)
    head = cupy.full(capacity, -1, dtype=cupy.int64)
    # A slot outside `head`: the kernel raises the fault word, read back on the download.
    with pytest.raises(IndexError, match="dup_scan: an account slot outside head"):
        backend.dup_scan(sigs, np.array([0, 1, 7]), window_sig, window_prev, head, 0, 8)
    # The fault word was cleared: the next good batch goes through.
    assert backend.dup_scan(sigs, np.array([0, 1, 1]), window_sig, window_prev, head, 3, 8).within_dist.shape == (3,)
    # State arrays must be the device's own (an update of a host copy would be lost).
    with pytest.raises(TypeError, match="must be a emulated_cupy array owned by the backend"):
        backend.dup_scan(sigs, np.zeros(3, np.int64), np.zeros((rows, words), np.uint64), window_prev, head, 0, 8)
    with pytest.raises(ValueError, match="planes must be"):
        backend.signatures(np.ones((2, 8), np.float32), np.ones((8, 65), np.float32), np.zeros(65, np.float32))
    # Every launch of the backend was enqueued on its own stream, none on the null stream.
    assert set(device.launch_streams) == {backend.runtime.stream.ptr}
    # A host array handed to a kernel is refused as CuPy refuses it (a pointer to host memory).
    launch = backend.launcher("pack_sign_bits")
    proj = cupy.ones((2, 64), dtype=cupy.float32)
    out = cupy.zeros((2, 1), dtype=cupy.uint64)
    with pytest.raises(TypeError, match="pass a cupy.ndarray instead"):
        launch((1, 1, 1), (32, 1, 1), (proj, np.zeros(64, np.float32), np.int64(2), np.int64(64), out))
    launch((1, 1, 1), (32, 1, 1), (proj, cupy.zeros(64, dtype=cupy.float32), np.int64(2), np.int64(64), out))
    assert int(out[0, 0]) == 2**64 - 1


@pytest.mark.emulated_gpu
def test_backend_functions_equal_the_reference_on_the_emulated_device(backend: CudaBackend) -> None:
    """One pass of each Backend function over odd sizes (D = 40, n = 37) against NumpyBackend."""
    rng = np.random.default_rng(5)
    n, d, k, slots_n = 37, 40, 24, 9
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[5] = x[4]
    planes = rng.standard_normal((d, 128)).astype(np.float32)
    offsets = rng.standard_normal(128).astype(np.float32) * 0.01
    slots = rng.integers(0, slots_n, n)
    slots[5] = slots[4]  # a within-account copy
    ts = np.sort(rng.integers(0, 10_000, n))
    ref = NumpyBackend()
    sig = backend.to_host(backend.signatures(x, planes, offsets))
    np.testing.assert_array_equal(sig, ref.signatures(x, planes, offsets))

    def near_duplicate_state(b: Any) -> tuple[list[Any], list[Any]]:
        xp, size = b.xp, 1 << 16
        window = [xp.zeros((128, 2), dtype=xp.uint64), xp.full(128, -1, dtype=xp.int64), xp.full(slots_n, -1, dtype=xp.int64)]
        tables = [xp.full((8, size), -1, dtype=xp.int64), xp.zeros((8, size), dtype=xp.int64), xp.zeros((8, size, 2), dtype=xp.uint64)]
        return window, tables

    (window, tables), (ref_window, ref_tables) = near_duplicate_state(backend), near_duplicate_state(ref)
    got_scan, want_scan = backend.dup_scan(sig, slots, *window, 0, 32), ref.dup_scan(sig, slots, *ref_window, 0, 32)
    np.testing.assert_array_equal(got_scan.within_dist, want_scan.within_dist)
    assert (want_scan.within_dist == 0).any()  # the copied row
    got, want = backend.cross_lookup(sig, slots, ts, *tables, 8, 5_000), ref.cross_lookup(sig, slots, ts, *ref_tables, 8, 5_000)
    np.testing.assert_array_equal(got.cross_slot, want.cross_slot)
    np.testing.assert_array_equal(got.cross_dist, want.cross_dist)
    mean = x.mean(axis=0)
    centroids = rng.standard_normal((k, d)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    weights = rng.random(n) + 0.5
    dev_style = [backend.xp.zeros((slots_n, d), dtype=np.float32), backend.xp.zeros(slots_n, dtype=np.float64)]
    ref_style = [np.zeros((slots_n, d), np.float32), np.zeros(slots_n, np.float64)]
    cells, residual = backend.destyled_cells(x.astype(np.float16), mean, centroids, slots, weights, *dev_style)
    want_cells, want_residual = ref.destyled_cells(x.astype(np.float16), mean, centroids, slots, weights, *ref_style)
    np.testing.assert_array_equal(backend.to_host(cells), want_cells)
    # Sums of squares and style sums are reduced in another order (warp trees): as in tests/kernels.
    np.testing.assert_allclose(backend.to_host(residual), want_residual, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(backend.to_host(dev_style[0]), ref_style[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(backend.to_host(dev_style[1]), ref_style[1])
    hist, ref_hist = backend.xp.zeros((slots_n, k), dtype=np.float32), np.zeros((slots_n, k), np.float32)
    backend.histogram_add(hist, slots, want_cells, weights)
    ref.histogram_add(ref_hist, slots, want_cells, weights)
    np.testing.assert_allclose(backend.to_host(hist), ref_hist, rtol=1e-6)  # float atomics: any order
    surprisal = rng.random(k).astype(np.float32)
    got_r, want_r = backend.coverage_reduce(hist, np.arange(slots_n), surprisal), ref.coverage_reduce(ref_hist, np.arange(slots_n), surprisal)
    for name in ("sum_sq", "surprisal", "distinct"):
        np.testing.assert_allclose(got_r[name], want_r[name], rtol=1e-5)


@pytest.mark.emulated_gpu
def test_requests_are_damped_on_the_device_as_on_the_host(backend: CudaBackend) -> None:
    """A codebook with damped directions (D = 256) assigns the same cells through the cuda backend."""
    from streamguard.detectors.codebook import fit_codebook
    from streamguard.detectors.coverage import CoverageDetector
    from streamguard.detectors.near_duplicate import DetectorBatch

    rng = np.random.default_rng(11)
    centres = rng.standard_normal((20, 256)).astype(np.float32)
    x = np.repeat(centres / np.linalg.norm(centres, axis=1, keepdims=True), 30, axis=0)
    x += 0.08 * rng.standard_normal(x.shape).astype(np.float32)
    x += (rng.standard_normal((len(x), 1)) * 2.0).astype(np.float32) * rng.standard_normal((1, 256)).astype(np.float32) / 16.0
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    book = fit_codebook(x, rng.integers(0, 100, len(x)).astype(str).astype(object), 40, 40, 64, 0, min_accounts=2)
    assert book.dominant is not None

    def cells(b: Any) -> np.ndarray:
        coverage = CoverageDetector(
            b, book.mean, book.centroids, book.topic_of_cell, book.domain_of_topic, book.warmup_counts,
            capacity=len(x), dominant=book.dominant, dominant_shrink=book.dominant_shrink,
        )
        slots = np.arange(len(x), dtype=np.int64)
        return coverage.update(DetectorBatch(slots, np.full(len(x), 1_700_000_000_000, np.int64), b.asarray(x))).cells

    np.testing.assert_array_equal(cells(backend), cells(NumpyBackend()))


@pytest.mark.emulated_gpu
def test_a_prebuilt_module_image_is_loaded_through_raw_module_path(device: EmulatedDevice, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CupyRuntime's kernel-cache branch (``RawModule(path=...)``); the emulated image is the source text."""
    sources = kernel_sources()
    stem = sorted(sources)[0]
    (tmp_path / f"{stem}-{source_digest(sources[stem])}.fatbin").write_text(sources[stem], encoding="utf-8")
    monkeypatch.setenv(KERNEL_CACHE_ENV, str(tmp_path))
    runtime = CupyRuntime(cupy_module=device.cupy, cupyx_module=device.cupyx)
    CudaBackend(runtime=runtime).warmup()
    assert [m.file_path is not None for m in runtime._modules] == [stem == s for s in sources]
    (tmp_path / f"{stem}-{source_digest(sources[stem])}.fatbin").write_bytes(b"\x7fELF\0\0nvcc fat binary")
    with pytest.raises(CompileException, match="runs CUDA source, not nvcc binaries"):
        CudaBackend(runtime=CupyRuntime(cupy_module=device.cupy, cupyx_module=device.cupyx)).warmup()


@pytest.mark.emulated_gpu
def test_the_emulated_device_is_chosen_only_explicitly(emulate_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CUDA_EMULATE_ENV, "1")
    backend = create_backend("cuda")
    assert isinstance(backend, CudaBackend) and isinstance(backend.runtime.device, EmulatedDevice)
    if cuda_unavailable_reason() is not None:
        monkeypatch.delenv(CUDA_EMULATE_ENV)
        with pytest.raises(BackendUnavailable, match="--backend cuda"):
            create_backend("cuda")


# ------------------------------------------------------------------ replay, end to end


@pytest.fixture(scope="module", params=WORLDS, ids=lambda w: f"seed{w[0]}")
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict]]:
    """The first REPLAY_ROWS requests of a `streamguard simulate` file, the config, and numpy's alerts."""
    seed, scale = request.param
    where = tmp_path_factory.mktemp(f"world{seed}")
    full, traffic = where / "full.parquet", where / "traffic.parquet"
    argv = ["simulate", "--out", str(full), "--labels", str(where / "labels.json"), "--seed", str(seed)]
    assert cli.main([*argv, "--scale", str(scale), "--dim", "32", "--days", "1"]) == 0
    table = pq.read_table(full)
    pq.write_table(table.take(pc.sort_indices(table, [("ts", "ascending")])).slice(0, REPLAY_ROWS), traffic)
    config = where / "replay.toml"
    config.write_text(REPLAY_CONFIG, encoding="utf-8")
    return traffic, config, _replay(traffic, config, "numpy", where / "numpy.jsonl")


def _replay(traffic: Path, config: Path, backend: str, alerts: Path) -> list[dict]:
    argv = ["replay", str(traffic), "--alerts", str(alerts), "--config", str(config), "--backend", backend]
    assert cli.main(argv) == 0
    return [json.loads(line) for line in alerts.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("device_kind", [pytest.param("emulated", marks=pytest.mark.emulated_gpu), pytest.param("gpu", marks=pytest.mark.gpu)])
def test_replay_on_cuda_raises_the_alerts_of_numpy(
    device_kind: str, world: tuple[Path, Path, list[dict]], emulate_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``streamguard replay --backend cuda`` == ``--backend numpy``: the same alerts, field for field.

    Emulated: CupyRuntime and CudaBackend unchanged over the emulated device,
    from the codebook's fit (its dry run on the backend) to the last tick.
    """
    traffic, config, numpy_alerts = world
    devices: list[EmulatedDevice] = []
    if device_kind == "gpu":
        reason = cuda_unavailable_reason()
        if reason is not None:
            pytest.skip(f"no CUDA device: {reason}")
        monkeypatch.delenv(CUDA_EMULATE_ENV, raising=False)
    else:
        monkeypatch.setenv(CUDA_EMULATE_ENV, "1")
        emulated = CupyRuntime.emulated.__func__  # type: ignore[attr-defined]

        def watched(cls: type[CupyRuntime], *args: Any, **kwargs: Any) -> CupyRuntime:
            runtime = emulated(cls, *args, **kwargs)
            devices.append(runtime.device)
            return runtime

        monkeypatch.setattr(CupyRuntime, "emulated", classmethod(watched))
    cuda_alerts = _replay(traffic, config, "cuda", tmp_path / "cuda.jsonl")
    assert numpy_alerts, "the world raises no alert to compare; pick another seed"
    assert cuda_alerts == numpy_alerts
    if device_kind == "emulated":
        (device,) = devices
        every = {e.name for code in kernel_sources().values() for e in entry_points(code)}
        # float32 traffic; no account of this world holds its cap of the window (dup_query: test_capped_window_detector)
        assert set(device.launched) == every - {"center_unit_f16", "dup_query"}
