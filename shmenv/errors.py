"""The exceptions shmenv raises; all derive from :class:`ShmenvError`."""

from __future__ import annotations


class ShmenvError(RuntimeError):
    """Base class of every shmenv runtime error."""


class ClosedError(ShmenvError):
    """A call on an env or Worker that was closed (by ``close()`` or after a failure)."""


class WorkerDiedError(ShmenvError):
    """A worker process exited while the main process was waiting for it."""


class WorkerError(ShmenvError):
    """An exception raised inside a worker; its message carries the worker's traceback."""


class SharedMemorySpaceError(ShmenvError, OSError):
    """The shared-memory filesystem has too little free space for the block."""
