"""deploy/docker: lint-style checks of both Dockerfiles (no daemon needed), plus hadolint."""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "deploy" / "docker"
DOCKERFILES = {
    "Dockerfile": {"base": "nvidia/cuda:", "flavour": "-runtime-", "extras": {"gpu", "kafka", "metrics"}, "build_flavour": "-devel-"},
    "Dockerfile.cpu": {"base": "python:3.11-slim", "flavour": "", "extras": {"cpu", "kafka", "metrics"}},
}


def instructions(path: Path) -> list[tuple[str, str, list[str]]]:
    """(INSTRUCTION, arguments, comments just above it), continuation lines joined."""
    out: list[tuple[str, str, list[str]]] = []
    comments: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            if line.startswith("#"):
                comments.append(line.lstrip("# "))
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, rest = full.partition(" ")
        out.append((keyword.upper(), rest.strip(), comments))
        comments = []
    return out


def images(path: Path) -> list[str]:
    """FROM images of every stage, ARG defaults substituted."""
    args: dict[str, str] = {}
    found = []
    for keyword, rest, _ in instructions(path):
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
        if keyword == "FROM":
            image = rest.split()[0]
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], image)
            found.append(image)
    return found


def stages(path: Path) -> list[list[tuple[str, str, list[str]]]]:
    out: list[list[tuple[str, str, list[str]]]] = []
    for inst in instructions(path):
        if inst[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(inst)
    return out


def copy_sources(path: Path) -> list[str]:
    sources = []
    for keyword, rest, _ in instructions(path):
        if keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(rest)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        sources.extend(words[:-1])
    return sources


@pytest.fixture(params=sorted(DOCKERFILES))
def dockerfile(request) -> tuple[Path, dict]:
    return DOCKER / request.param, DOCKERFILES[request.param]


def test_base_images_are_pinned_and_right(dockerfile) -> None:
    path, expected = dockerfile
    found = images(path)
    assert found, "no FROM"
    for image in found:
        assert ":" in image, f"{image}: untagged means latest"
        assert not image.endswith(":latest"), image
        assert image.startswith(expected["base"]), image
        assert expected["flavour"] in image or expected.get("build_flavour", "\0") in image, image
    assert expected["flavour"] in found[-1], f"the final stage must be the {expected['flavour']} image: {found[-1]}"
    assert "latest" not in path.read_text().lower().replace("the latest", "")


def test_copy_sources_exist_and_pass_the_dockerignore(dockerfile) -> None:
    path, _ = dockerfile
    sources = copy_sources(path)
    assert sources
    ignore = (path.parent / f"{path.name}.dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    assert "*" in ignore, "the per-Dockerfile ignore file should allow-list the build context"
    for excluded in (".venv", ".git", "out"):
        assert not any(fnmatch.fnmatch(excluded, a) for a in allowed), f"{excluded} would be sent to the daemon"
    missing = []
    for source in sources:
        assert not source.startswith(("/", "..")), f"{source}: outside the build context"
        assert source.rstrip("/") in allowed, f"{source} is excluded by {path.name}.dockerignore"
        if not (REPO / source).exists():
            missing.append(source)
    assert not [m for m in missing if m != "kernels/"], f"COPY sources missing from the repository: {missing}"
    if "kernels/" in sources and not list(REPO.glob("kernels/*.cu")):
        pytest.skip("kernels/ holds no .cu source in this checkout yet: the CUDA image build would fail until it does")


def test_runs_as_non_root(dockerfile) -> None:
    path, _ = dockerfile
    final = stages(path)[-1]
    users = [rest for keyword, rest, _ in final if keyword == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user == "10001"
    assert any(keyword == "RUN" and "useradd --uid 10001" in rest for keyword, rest, _ in final)


def test_healthcheck_present_or_explained(dockerfile) -> None:
    path, _ = dockerfile
    checks = [(rest, comments) for keyword, rest, comments in instructions(path) if keyword == "HEALTHCHECK"]
    assert checks, "add a HEALTHCHECK, or HEALTHCHECK NONE with the reason above it"
    rest, comments = checks[-1]
    if rest.strip().upper() == "NONE":
        assert "healthcheck" in " ".join(comments).lower(), "HEALTHCHECK NONE needs the reason in a comment above it"


def test_installs_the_package_with_the_right_extras(dockerfile) -> None:
    path, expected = dockerfile
    runs = " ".join(rest for keyword, rest, _ in instructions(path) if keyword == "RUN")
    match = re.search(r'pip install "\.\[([a-z,]+)\]"', runs)
    assert match, "pip install \".[extras]\" not found"
    extras = set(match.group(1).split(","))
    assert extras == expected["extras"]
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras <= declared.keys(), f"extras not declared in pyproject.toml: {extras - declared.keys()}"
    exposes = [rest for keyword, rest, _ in instructions(path) if keyword == "EXPOSE"]
    assert exposes == ["9108"]
    entry = [rest for keyword, rest, _ in instructions(path) if keyword == "ENTRYPOINT"]
    assert entry == ['["streamguard"]']


def test_cuda_image_ships_a_kernel_cache_warmed_at_build() -> None:
    from streamguard.backends.kernels import KERNEL_CACHE_ENV, KERNEL_DIR_ENV

    path = DOCKER / "Dockerfile"
    parts = stages(path)
    builder = [st for st in parts if st[0][1].endswith(" AS kernels")]
    assert builder, "a build stage named kernels"
    runs = " ".join(rest for keyword, rest, _ in builder[0] if keyword == "RUN")
    assert "scripts/build_kernel_cache.py --out /opt/streamguard/kernel-cache --arch 80 --arch 90" in runs
    final = parts[-1]
    copies = [rest for keyword, rest, _ in final if keyword == "COPY"]
    assert "--from=kernels /opt/streamguard/kernel-cache/ /opt/streamguard/kernel-cache/" in copies
    env = " ".join(rest for keyword, rest, _ in final if keyword == "ENV")
    # The names the code reads, not look-alikes.
    assert f"{KERNEL_DIR_ENV}=/opt/streamguard/kernels" in env
    assert f"{KERNEL_CACHE_ENV}=/opt/streamguard/kernel-cache" in env


def test_hadolint(dockerfile, which) -> None:
    path, _ = dockerfile
    result = subprocess.run([which("hadolint"), "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
