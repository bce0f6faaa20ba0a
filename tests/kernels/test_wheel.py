"""The kernels ship inside the wheel, and the loader finds them in an installed copy (no checkout around)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(os.environ.get("STREAMGUARD_WHEEL_SOURCE", Path(__file__).resolve().parents[2]))
"""The project tree to build (the checkout under test unless overridden)."""


@pytest.mark.slow
def test_wheel_carries_the_kernels_and_the_installed_loader_finds_them(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-w", str(dist), "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("streamguard-*.whl")
    expected = sorted(p.name for p in (ROOT / "kernels").iterdir() if p.suffix in {".cu", ".cuh", ".h"})
    with zipfile.ZipFile(wheel) as archive:
        shipped = sorted(Path(name).name for name in archive.namelist() if name.startswith("streamguard/kernels/"))
    assert set(expected) <= set(shipped), (
        f"the wheel lacks {sorted(set(expected) - set(shipped))}: ship kernels/ as package data "
        "(symlink streamguard/kernels -> ../kernels and the pyproject entry, see kernels/README.md)"
    )

    # A fresh venv with the wheel alone (--no-deps); numpy, which streamguard.backends imports,
    # comes from this interpreter through a .pth (it is a directory, so no editable finder rides along).
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    site = Path(
        subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       capture_output=True, text=True, check=True).stdout.strip()
    )  # fmt: skip
    (site / "outer_numpy.pth").write_text(str(Path(np.__file__).resolve().parents[1]) + "\n")
    probe = (
        "import streamguard.backends.kernels as k, json;"
        "print(json.dumps({'dir': str(k.kernel_dir()), 'module': k.__file__,"
        " 'stems': sorted(k.kernel_sources()), 'common': len(k.read_kernel('common.cuh'))}))"
    )
    env = {key: value for key, value in os.environ.items() if key not in {"STREAMGUARD_KERNEL_DIR", "PYTHONPATH"}}
    found = subprocess.run(
        [str(python), "-I", "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env, check=False
    )
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert Path(result["module"]).is_relative_to(env_dir), result  # the installed copy, not the checkout
    assert Path(result["dir"]).resolve().is_relative_to(env_dir.resolve()), result
    assert result["stems"] == sorted(p.stem for p in (ROOT / "kernels").glob("*.cu")) and result["common"] > 0
