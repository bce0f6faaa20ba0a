"""Kernels prebuilt at image build time: built by nvcc, found only for the exact source, loaded by the backend."""

from __future__ import annotations

import pytest

from scripts.build_kernel_cache import build, main
from scripts.check_kernels import find_nvcc
from streamguard.backends.kernels import KERNEL_CACHE_ENV, entry_points, kernel_sources, prebuilt_binary

nvcc = find_nvcc()
needs_nvcc = pytest.mark.skipif(nvcc is None, reason="nvcc not on this machine")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernel-cache")
    build(nvcc, out, ("80",))
    return out


@needs_nvcc
def test_every_kernel_file_is_built_for_its_exact_source(cache, monkeypatch):
    sources = kernel_sources()
    assert sorted(p.name.split("-")[0] for p in cache.glob("*.fatbin")) == sorted(sources)
    for stem, code in sources.items():
        binary = prebuilt_binary(stem, code, cache)
        assert binary is not None
        data = binary.read_bytes()
        assert b"sm_80" in data
        assert all(entry.name.encode() in data for entry in entry_points(code))
        # An edited kernel or header never loads the old binary.
        assert prebuilt_binary(stem, code + "\n// edited\n", cache) is None
        monkeypatch.setenv(KERNEL_CACHE_ENV, str(cache))
        assert prebuilt_binary(stem, code) == binary
        monkeypatch.delenv(KERNEL_CACHE_ENV)
        assert prebuilt_binary(stem, code) is None


@needs_nvcc
def test_the_builder_command_line(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "c"), "--arch", "80"]) == 0
    assert len(list((tmp_path / "c").glob("*.fatbin"))) == len(kernel_sources())
    broken = tmp_path / "nvcc"
    broken.write_text("#!/bin/sh\necho 'kernels/x.cu(1): error: nope' >&2\nexit 1\n")
    broken.chmod(0o755)
    assert main(["--out", str(tmp_path / "d"), "--nvcc", str(broken)]) == 1
    assert "nvcc failed on kernels/" in capsys.readouterr().err


def test_the_cuda_backend_loads_a_prebuilt_binary_and_compiles_the_rest(tmp_path, monkeypatch):
    from streamguard.backends.cuda_runtime import CupyRuntime
    from streamguard.backends.kernels import source_digest

    calls = []

    class FakeModule:
        def __init__(self, **kwargs):
            calls.append(kwargs)

        def compile(self):
            pass

        def get_function(self, name):
            return name

    class FakeCupy:
        RawModule = FakeModule

    sources = kernel_sources()
    cached, compiled = sorted(sources)[:2]
    (tmp_path / f"{cached}-{source_digest(sources[cached])}.fatbin").write_bytes(b"\0")
    monkeypatch.setenv(KERNEL_CACHE_ENV, str(tmp_path))
    runtime = CupyRuntime.__new__(CupyRuntime)  # no device here: only the loading logic
    runtime._cupy, runtime._modules = FakeCupy, []
    launchers = runtime.load({cached: sources[cached], compiled: sources[compiled]})
    assert calls[0] == {"path": str(tmp_path / f"{cached}-{source_digest(sources[cached])}.fatbin")}
    assert calls[1]["code"] == sources[compiled] and calls[1]["options"] == ("--std=c++17",)
    assert set(launchers) == {e.name for code in sources.values() for e in entry_points(code)}
