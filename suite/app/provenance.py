"""Provenance stored with every cell: code version, package versions, hardware, host."""

from __future__ import annotations

import platform
import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from suite import __version__

# Libraries whose version can move a result; each is a provenance column (lm-eval as lm_eval).
PACKAGES = ("torch", "transformers", "peft", "datasets", "torchao", "triton", "lm-eval")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def package_column(package: str) -> str:
    return package.replace("-", "_")


def library_versions() -> dict[str, str]:
    """Installed versions of ``PACKAGES`` ("" for one that is not installed)."""
    return {package: _version(package) for package in PACKAGES}


def versions_line() -> str:
    """One line for the start of a run: what it runs with, and which optional libraries are absent."""
    versions = library_versions()
    present = [f"{name} {v}" for name, v in versions.items() if v]
    absent = [name for name, v in versions.items() if not v]
    return ", ".join(present) + (f" (not installed: {', '.join(absent)})" if absent else "")


def git_commit() -> str:
    """The commit of the checkout the suite runs from, '+dirty' when it has local changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5).stdout.strip()
        if not commit:
            return ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "cpu: " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu: " + (platform.processor() or platform.machine())


@lru_cache(maxsize=4)
def collect(device: str) -> dict[str, str]:
    import torch

    info = {
        "suite_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        **{package_column(name): v for name, v in library_versions().items()},
        "device": device_name(device),
        "cuda": torch.version.cuda or "" if device.startswith("cuda") else "",
        "host": socket.gethostname(),
    }
    return info
