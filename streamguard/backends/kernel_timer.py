"""Device time of every custom-kernel launch of the ``cuda`` backend, without synchronising.

:class:`KernelTimer` wraps the backend's public ``launcher`` from outside
(the backend itself knows nothing of metrics) and feeds
:meth:`streamguard.metrics.StreamguardMetrics.gpu_kernel`.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamguard.metrics import StreamguardMetrics

# The logger these lines have always had (they lived in streamguard/metrics.py).
log = logging.getLogger("streamguard.metrics")


class KernelTimer:
    """Device time of every custom-kernel launch of the ``cuda`` backend -> ``streamguard_gpu_kernel_seconds``.

    Wraps the backend's public ``launcher(entry)`` (every launch of
    :class:`streamguard.backends.cuda_backend.CudaBackend` goes through it):
    a CUDA event is recorded on the launching stream before and after the
    kernel, and :meth:`drain` (called after each batch) turns the pairs whose
    stop event has completed into observations, without ever synchronising
    the device. At most ``max_pending`` pairs wait; older ones are dropped
    (and counted in ``dropped``) rather than growing without bound.

    ``event`` and ``elapsed_s`` are injectable so that the bookkeeping is
    tested without a GPU; by default they are CuPy's events.
    """

    def __init__(
        self,
        metrics: StreamguardMetrics,
        backend: Any,
        *,
        event: Callable[[], Any] | None = None,
        elapsed_s: Callable[[Any, Any], float] | None = None,
        max_pending: int = 8192,
    ) -> None:
        if event is None or elapsed_s is None:
            import cupy  # noqa: PLC0415 - only on a CUDA machine

            event = event or cupy.cuda.Event
            elapsed_s = elapsed_s or (lambda start, stop: cupy.cuda.get_elapsed_time(start, stop) / 1000.0)
        self.metrics = metrics
        self._event = event
        self._elapsed_s = elapsed_s
        self._pending: collections.deque[tuple[str, Any, Any]] = collections.deque()
        self._max_pending = int(max_pending)
        self.dropped = 0
        self.launches = 0
        inner = backend.launcher

        def launcher(entry: str) -> Callable[..., None]:
            launch = inner(entry)

            def timed(grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...]) -> None:
                start, stop = self._event(), self._event()
                start.record()
                launch(grid, block, args)
                stop.record()
                self.launches += 1
                if len(self._pending) >= self._max_pending:
                    self._pending.popleft()
                    self.dropped += 1
                self._pending.append((entry, start, stop))

            return timed

        backend.launcher = launcher  # an instance attribute: CudaBackend._run looks it up on self

    def drain(self) -> int:
        """Observe every finished launch, oldest first; stops at the first one still running."""
        done = 0
        while self._pending:
            entry, start, stop = self._pending[0]
            if not stop.done:
                break
            self._pending.popleft()
            self.metrics.gpu_kernel(entry, self._elapsed_s(start, stop))
            done += 1
        return done


def instrument_kernels(metrics: StreamguardMetrics, backend: Any) -> KernelTimer | None:
    """A :class:`KernelTimer` on ``backend`` when it is the ``cuda`` backend, else None."""
    if getattr(backend, "name", "") != "cuda" or not callable(getattr(backend, "launcher", None)):
        return None
    try:
        return KernelTimer(metrics, backend)
    except Exception:  # noqa: BLE001 - timing is an extra; detection must go on without it
        log.warning("GPU kernel timing unavailable", exc_info=True)
        return None
