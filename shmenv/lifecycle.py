"""``close()`` and context-manager plumbing shared by the vector envs.

An env that owns processes and shared memory registers one ``weakref.finalize`` that
releases them; this mixin makes ``close()``, ``with`` and garbage collection all end in that
one finalizer, exactly once, and records why the env closed so that later calls can say
so (``ClosedError``).
"""

from __future__ import annotations

import weakref
from typing import Any, TypeVar

_Env = TypeVar("_Env", bound="ClosableEnvMixin")


class ClosableEnvMixin:
    """For a VectorEnv subclass that sets ``_closed_reason`` (None while open) and
    ``_finalizer`` (the ``weakref.finalize`` that releases what it owns)."""

    _closed_reason: str | None
    _finalizer: weakref.finalize
    closed: bool

    def _forget_in_flight(self) -> None:
        """Drop the bookkeeping of requests still in flight (subclasses that keep some)."""

    def _before_release(self, reason: str) -> None:
        """Runs just before the finalizer stops what the env owns (subclasses that need to
        tell a call waiting in another thread why its workers went away)."""

    def _shutdown(self, reason: str) -> None:
        if self._closed_reason is None:
            self._closed_reason = reason
        self._forget_in_flight()
        self._before_release(self._closed_reason)
        self.closed = True
        self._finalizer()

    def close_extras(self, **kwargs: Any) -> None:
        self._shutdown("close() was called")

    def close(self, **kwargs: Any) -> None:
        """Stop the workers (or actors) and release the shared memory. Safe to call more
        than once; any later call on the env raises ``ClosedError``."""
        if getattr(self, "_finalizer", None) is None:  # __init__ failed before owning any
            return
        self._shutdown("close() was called")

    def __enter__(self: _Env) -> _Env:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class PoolOwnerMixin(ClosableEnvMixin):
    """For a vector env whose workers are a :class:`shmenv.pool.WorkerPool` (``_pool``)
    serving the env ranges ``_env_ranges``: the pool's side of closing and forking, and
    the read-only facts about its workers."""

    _pool: Any
    _env_ranges: list[tuple[int, int]]

    def _before_release(self, reason: str) -> None:
        self._pool.closing = reason  # a call waiting in another thread: ClosedError

    def _forked(self) -> None:
        """In a forked child (see WorkerPool.forked_away): refuse every call."""
        self._closed_reason = "it belongs to another process"

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """The worker processes' pids, in worker order (they stay listed after close)."""
        return tuple(int(process.pid or 0) for process in self._pool.processes)

    @property
    def worker_env_ranges(self) -> tuple[tuple[int, int], ...]:
        """Each worker's envs as ``(start, stop)``, in worker order."""
        return tuple(self._env_ranges)
