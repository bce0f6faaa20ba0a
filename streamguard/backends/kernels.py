"""The CUDA sources of ``kernels/``: where they are, how they are read, what each entry point answers to.

The ``.cu`` files are plain text read at start-up and compiled once by the CUDA
backend (``cupy.RawModule``); the same text is compiled by g++ for the CPU
parity tests and by nvcc in ``scripts/check_kernels.py``. This module imports
neither CuPy nor numba.

Where the files are found, first match wins:

1. ``$STREAMGUARD_KERNEL_DIR``, for a deployment that ships patched kernels;
2. ``streamguard/kernels/`` inside the installed package: a wheel carries them
   there (the build copies the top-level ``kernels/`` in, see kernels/README.md);
3. ``kernels/`` of the source checkout this module sits in (editable installs, tests).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

KERNEL_DIR_ENV = "STREAMGUARD_KERNEL_DIR"
KERNEL_CACHE_ENV = "STREAMGUARD_KERNEL_CACHE"
"""A directory of prebuilt binaries (``scripts/build_kernel_cache.py``), e.g. baked into the image."""
COMPILE_OPTIONS: tuple[str, ...] = ("--std=c++17",)
"""What the CUDA backend passes NVRTC, and the kernel cache builder passes nvcc."""
COMMON_HEADER = "common.cuh"
_MARKER = COMMON_HEADER  # a directory holding this file is a kernel directory
_INCLUDE_COMMON = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"common\.cuh"[ \t]*$', re.MULTILINE)
_ENTRY = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.DOTALL)


class KernelSourceError(RuntimeError):
    """The CUDA sources cannot be found or are malformed; the message says where it looked."""


def _candidates() -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    env = os.environ.get(KERNEL_DIR_ENV)
    if env:
        found.append((f"${KERNEL_DIR_ENV}", Path(env)))
    try:
        packaged = resources.files("streamguard") / "kernels"
        found.append(("installed package", Path(str(packaged))))
    except (ModuleNotFoundError, TypeError):  # a zip import has no real directory to offer
        pass
    found.append(("source checkout", Path(__file__).resolve().parents[2] / "kernels"))
    return found


def kernel_dir() -> Path:
    """The directory holding ``common.cuh`` and the ``*.cu`` files.

    Raises
    ------
    KernelSourceError
        When none of the places listed in the module docstring holds them.
    """
    candidates = _candidates()
    for origin, path in candidates:
        if (path / _MARKER).is_file():
            return path
        if origin.startswith("$"):
            raise KernelSourceError(f"{KERNEL_DIR_ENV}={path} does not contain {_MARKER}")
    looked = ", ".join(f"{origin}: {path}" for origin, path in candidates)
    raise KernelSourceError(f"CUDA kernel sources not found (looked in {looked}); reinstall streamguard")


def kernel_stems() -> list[str]:
    """Stems of every ``*.cu`` file, sorted: one per detector family (``near_duplicate``, ``coverage``)."""
    return sorted(path.stem for path in kernel_dir().glob("*.cu"))


def read_kernel(name: str) -> str:
    """Raw text of one file of the kernel directory (``"coverage"``, ``"coverage.cu"``, ``"common.cuh"``)."""
    path = kernel_dir() / (name if "." in name else f"{name}.cu")
    if not path.is_file():
        raise KernelSourceError(f"no kernel source {path.name} in {path.parent}")
    return path.read_text(encoding="utf-8")


def assemble(stem: str) -> str:
    """Compilable text of ``kernels/<stem>.cu`` with ``common.cuh`` inlined.

    ``#line`` directives keep every compiler message pointing at the right
    file and line. The header is inlined rather than found through ``-I``
    because CuPy caches compiled binaries by source text: an include would let
    a stale binary survive an edit of the header.
    """
    source = read_kernel(stem)
    header = read_kernel(COMMON_HEADER)
    match = _INCLUDE_COMMON.search(source)
    if match is None:
        raise KernelSourceError(f'kernels/{stem}.cu must #include "{COMMON_HEADER}"')
    line_after = source.count("\n", 0, match.end()) + 2  # 1-based number of the line after the include
    inlined = f'#line 1 "kernels/{COMMON_HEADER}"\n{header}\n#line {line_after} "kernels/{stem}.cu"'
    return f'#line 1 "kernels/{stem}.cu"\n' + source[: match.start()] + inlined + source[match.end() :]


def source_digest(code: str) -> str:
    """16 hex digits naming a binary built from ``code`` with :data:`COMPILE_OPTIONS`: an edited
    kernel or header never loads a stale binary, it falls back to compiling the source."""
    return hashlib.sha256(("\0".join(COMPILE_OPTIONS) + "\0" + code).encode("utf-8")).hexdigest()[:16]


def prebuilt_binary(stem: str, code: str, cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The prebuilt fat binary of ``stem`` for exactly this source, if the kernel cache holds one.

    ``cache_dir`` defaults to ``$STREAMGUARD_KERNEL_CACHE``; no directory, or no file named
    ``<stem>-<source_digest>.fatbin`` in it, means None (the backend compiles the source).
    """
    where = cache_dir if cache_dir is not None else os.environ.get(KERNEL_CACHE_ENV)
    if not where:
        return None
    path = Path(where) / f"{stem}-{source_digest(code)}.fatbin"
    return path if path.is_file() else None


def kernel_sources() -> dict[str, str]:
    """``{stem: assembled source}`` for every ``*.cu`` file: what the CUDA backend compiles."""
    return {stem: assemble(stem) for stem in kernel_stems()}


@dataclass(frozen=True)
class Param:
    """One parameter of an entry point: C type (``"const float*"``) and name."""

    ctype: str
    name: str

    @property
    def is_pointer(self) -> bool:
        return self.ctype.endswith("*")

    @property
    def is_const(self) -> bool:
        return self.ctype.startswith("const ")

    @property
    def base(self) -> str:
        """The C type without ``const`` and ``*``: ``"float"``, ``"long long"``..."""
        return self.ctype.removeprefix("const ").removesuffix("*").strip()


@dataclass(frozen=True)
class EntryPoint:
    """An ``extern "C" __global__`` function of a ``.cu`` file."""

    name: str
    params: tuple[Param, ...]


def entry_points(source: str) -> list[EntryPoint]:
    """Every ``extern "C" __global__`` entry point of a CUDA source, in order of appearance."""
    found = []
    for match in _ENTRY.finditer(source):
        params = []
        for raw in match.group(2).split(","):
            text = " ".join(raw.replace("__restrict__", "").split())
            if not text:
                continue
            type_part, _, name = text.rpartition(" ")
            ctype = type_part.replace(" *", "*").strip()
            if name.startswith("*"):  # "float *x" spelling
                ctype, name = ctype + "*", name.lstrip("*")
            params.append(Param(ctype, name))
        found.append(EntryPoint(match.group(1), tuple(params)))
    return found


@dataclass(frozen=True)
class KernelContract:
    """What an entry point answers to.

    backend_function : the :class:`streamguard.backends.base.Backend` function
        it implements (also the name of its NumPy reference method and of its
        numba twin on ``CpuBackend``)
    reference : dotted path of the NumPy oracle of this step
    """

    backend_function: str
    reference: str


_NP = "streamguard.backends.numpy_backend"

CONTRACTS: dict[str, KernelContract] = {
    "pack_sign_bits": KernelContract("signatures", f"{_NP}.pack_sign_bits"),
    "slot_keys": KernelContract("dup_scan", f"{_NP}.NumpyBackend.dup_scan"),  # its stable argsort by slot
    "dup_link": KernelContract("dup_scan", f"{_NP}.NumpyBackend.dup_scan"),
    "dup_scan": KernelContract("dup_scan", f"{_NP}.NumpyBackend.dup_scan"),
    "dup_query": KernelContract("dup_query", f"{_NP}.NumpyBackend.dup_query"),
    "band_hash": KernelContract("cross_lookup", f"{_NP}.band_buckets"),
    "cross_candidates": KernelContract("cross_lookup", f"{_NP}.NumpyBackend.cross_lookup"),
    "cross_best_insert": KernelContract("cross_lookup", f"{_NP}.NumpyBackend.cross_lookup"),
    "center_unit_f32": KernelContract("destyled_cells", f"{_NP}.NumpyBackend.destyled_cells"),
    "center_unit_f16": KernelContract("destyled_cells", f"{_NP}.NumpyBackend.destyled_cells"),
    "nearest_residual": KernelContract("destyled_cells", f"{_NP}.NumpyBackend.destyled_cells"),
    "style_prefix": KernelContract("destyled_cells", f"{_NP}.NumpyBackend.destyled_cells"),
    "row_argmax": KernelContract("destyled_cells", f"{_NP}.NumpyBackend.destyled_cells"),
    "histogram_add": KernelContract("histogram_add", f"{_NP}.NumpyBackend.histogram_add"),
    "coverage_reduce": KernelContract("coverage_reduce", f"{_NP}.NumpyBackend.coverage_reduce"),
}
"""Every entry point of ``kernels/*.cu`` and what it is checked against (enforced by tests/kernels/test_meta.py)."""
