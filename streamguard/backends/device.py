"""The device label of ``streamguard_backend_info``: which GPU (or CPU) a backend runs on."""

from __future__ import annotations

import logging
import os
import platform
from typing import Any

# The logger these lines have always had (they lived in streamguard/metrics.py).
log = logging.getLogger("streamguard.metrics")


def backend_device(backend: Any) -> str:
    """The device label of ``streamguard_backend_info``: the GPU's name for ``cuda``, else the CPU."""
    name = getattr(backend, "name", "")
    device = getattr(backend, "device", None)
    if device:
        return str(device)
    if name == "cuda":
        try:
            import cupy  # noqa: PLC0415 - only on a CUDA machine

            index = cupy.cuda.runtime.getDevice()
            props = cupy.cuda.runtime.getDeviceProperties(index)
            label = props["name"]
            return label.decode() if isinstance(label, bytes) else str(label)
        except Exception:  # noqa: BLE001 - a label must not stop the service
            log.warning("could not read the CUDA device name", exc_info=True)
            return "cuda"
    return f"{platform.machine() or 'cpu'} x{os.cpu_count() or 1}"
