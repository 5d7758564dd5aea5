"""The exceptions shmenv raises; all derive from :class:`ShmenvError`."""

from __future__ import annotations

import builtins
import errno
import multiprocessing
import signal
from typing import Any

from gymnasium.error import ClosedEnvironmentError


class ShmenvError(RuntimeError):
    """Base class of every shmenv runtime error."""


class ClosedError(ShmenvError, ClosedEnvironmentError):
    """A call on an env or Worker that was closed (by ``close()`` or after a failure).

    Also a gymnasium ``ClosedEnvironmentError``, what gymnasium's vector envs raise for the
    same misuse, so code written for them catches it unchanged.
    """


class ForkedEnvError(ShmenvError):
    """An env, Worker or pool used in a process forked from the one that created it.

    Its workers answer only the process that started them: a forked child sending them
    commands would silently desync the parent's env. Create envs in the child itself (after
    the fork), or start children with the "spawn" method.
    """


class WorkerTimeoutError(ShmenvError, TimeoutError, multiprocessing.TimeoutError):
    """A worker did not answer within the env's ``timeout`` (a hung, stopped or swapped-out
    process). The message names the worker(s): index, pid, envs, and how long was waited.

    The env is closed and the hung workers were killed. Also the builtin ``TimeoutError``
    and ``multiprocessing.TimeoutError`` (what gymnasium's ``step_wait(timeout=...)``
    raises), so handlers written for either catch it. ``workers`` holds the indices of the
    workers that did not answer.
    """

    def __init__(self, message: str, workers: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.workers = workers

    def __reduce__(self) -> tuple[type, tuple[str, tuple[int, ...]]]:
        return type(self), (str(self), self.workers)


class WorkerDiedError(ShmenvError):
    """A worker process exited while the main process was waiting for it.

    ``exitcode`` is the process's exit code (negative: killed by that signal; None: unknown).
    """

    def __init__(self, message: str, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.exitcode = exitcode


class WorkerError(ShmenvError):
    """An exception raised inside a worker; its message carries the worker's traceback.

    ``worker_type`` is the name of the exception's class, ``worker_traceback`` its text.
    """

    def __init__(self, message: str, worker_type: str = "", worker_traceback: str = "") -> None:
        super().__init__(message)
        self.worker_type = worker_type
        self.worker_traceback = worker_traceback


_ENV_ERROR_CLASSES: dict[tuple[type, type], type] = {}


def env_error(message: str, worker_type: str, worker_traceback: str,
              kind: type[WorkerError] = WorkerError) -> WorkerError:
    """The error for an exception an env raised in a worker: a :class:`WorkerError` that is
    also an instance of the env's exception type when that is a plain builtin one
    (``ValueError``, ``AssertionError``, ...), so code that catches what the env raises
    (as it would under gymnasium's vector envs) still catches it. ``kind``: the WorkerError
    subclass to build (shmenv.ray's ActorError for an env in a Ray actor)."""
    base = getattr(builtins, worker_type, None)
    if (isinstance(base, type) and issubclass(base, Exception)
            and not issubclass(base, (OSError, ShmenvError, StopIteration, StopAsyncIteration))):
        try:
            cls = _ENV_ERROR_CLASSES.get((kind, base))
            if cls is None:
                cls = _ENV_ERROR_CLASSES[kind, base] = type(kind.__name__, (kind, base), {
                    "__doc__": f"A {kind.__name__} that is also the env's {base.__name__}."})
            error = cls(message, worker_type, worker_traceback)
            if str(error) == message:
                return error
        except TypeError:  # an exception type that cannot be combined or built this way
            pass
    return kind(message, worker_type, worker_traceback)


class SharedMemorySpaceError(OSError, ShmenvError):
    """The shared-memory filesystem has too little free space for the block.

    An ``OSError`` with ``errno == ENOSPC`` (what a full disk raises), so code that handles
    a full filesystem handles this too; ``OSError`` comes first in the bases so that its
    constructor sets ``errno`` and ``strerror`` and ``str()`` reads
    ``[Errno 28] <message>``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __reduce__(self) -> tuple[type, tuple[str]]:
        # OSError pickles as cls(errno, strerror); this constructor takes the message only.
        return type(self), (str(self.strerror),)


def describe_exit(process: Any, wait_s: float = 1.0) -> tuple[str, int | None]:
    """How a worker process ended, for error messages: ``("was killed by signal SIGKILL",
    -9)``. Waits up to ``wait_s`` for the exit status after its pipe reported EOF."""
    process.join(timeout=wait_s)
    code = process.exitcode
    if code is None:
        return "closed its pipe but is still running", None
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        hint = " (SIGKILL: often the kernel's out-of-memory killer)" if name == "SIGKILL" else ""
        return f"was killed by signal {name}{hint}", code
    return f"exited with code {code}", code
