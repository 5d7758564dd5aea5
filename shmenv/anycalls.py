"""The generic env's calls in flight: gymnasium's async life cycle and the workers' replies.

:class:`CallState` is gymnasium's ``AsyncState`` machine (one pending ``*_async`` call at a
time, with gymnasium's error types and messages); :class:`Replies` sends one command to
every worker and reads every reply, turning an error report into an error that names the
env, its worker and the env's own traceback; :class:`CallsMixin` is gymnasium's
``call``/``get_attr``/``set_attr``/``render`` over any transport, :class:`EnvCallsMixin` over
the workers' pipes.
"""

from __future__ import annotations

import enum
import pickle
import struct
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
from gymnasium import logger
from gymnasium.error import AlreadyPendingCallError, NoAsyncCallError

from shmenv.anyrelay import combine_errors
from shmenv.anyworker import RESERVED_CALLS
from shmenv.errors import env_error
from shmenv.planning import check_timeout
from shmenv.pool import WorkerPool
from shmenv.protocol import ERROR_MAGIC, OP_CALL, OP_SET_ATTR, ErrorReport
from shmenv.wire import HEADER


class AsyncState(enum.Enum):
    """Where gymnasium's async pair stands; the values are gymnasium's ``AsyncState``'s,
    used in its error messages."""

    DEFAULT = "default"
    WAITING_RESET = "reset"
    WAITING_STEP = "step"
    WAITING_CALL = "call"


class CallState:
    """The one pending ``*_async`` call; :meth:`begin` and :meth:`end` are the only moves."""

    def __init__(self) -> None:
        self.state = AsyncState.DEFAULT

    @property
    def pending(self) -> bool:
        return self.state is not AsyncState.DEFAULT

    def check_idle(self, what: str) -> None:
        """Raise ``AlreadyPendingCallError`` if a call waits for its ``*_wait``."""
        if self.state is not AsyncState.DEFAULT:
            end = "" if what == "reset_async" else "."  # gymnasium's messages, to the letter
            raise AlreadyPendingCallError(
                f"Calling `{what}` while waiting for a pending call to `{self.state.value}` "
                f"to complete{end}", self.state.value)

    def begin(self, state: AsyncState) -> None:
        """A ``*_async`` sent its commands (the caller checked :meth:`check_idle`)."""
        self.state = state

    def warn_if_pending(self) -> None:
        """Warn, as gymnasium does, that ``close()`` abandons the pending call."""
        if self.state is not AsyncState.DEFAULT:
            logger.warn(f"Calling `close` while waiting for a pending call to "
                        f"`{self.state.value}` to complete.")

    def end(self, state: AsyncState) -> None:
        """A ``*_wait`` is about to read its replies: ``NoAsyncCallError`` if its
        ``*_async`` is not the pending call. Cleared before reading, so an interrupted
        wait loses the call (the pool resynchronizes the pipes before the next one)."""
        if self.state is not state:
            verb = state.value
            raise NoAsyncCallError(f"Calling `{verb}_wait` without any prior call to "
                                   f"`{verb}_async`.", verb)
        self.state = AsyncState.DEFAULT


def command_frame(opcode: int, payload: bytes = b"") -> memoryview:
    """A whole pipe frame (multiprocessing's length header, the opcode, the payload)."""
    return memoryview(HEADER.pack(4 + len(payload)) + struct.pack("<i", opcode) + payload)


class Replies:
    """Commands out to every worker and their replies back, for the generic env."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._count = len(pool.specs)
        self._empty = memoryview(bytearray(0))  # what an empty reply fills
        self.payloads: list[bytes] = [b""] * self._count

    def send(self, frames: Sequence[memoryview]) -> None:
        """One frame to each worker (after resynchronizing an interrupted call's pipes)."""
        self._pool.resynchronize()
        self._pool.send_to_all(frames)

    def send_to(self, workers: Sequence[int], frames: Sequence[memoryview]) -> None:
        """A frame to each of some workers (async batches, which track them themselves)."""
        self._pool.resynchronize()
        for index, frame in zip(workers, frames, strict=True):
            self._pool.send_frame(index, frame)

    def read(self, timeout: float | None, when: str,
             workers: Sequence[int] | None = None) -> list[bytes]:
        """The reply payloads (``b""`` when empty) of ``workers`` (None: every worker, in
        order), within ``timeout`` seconds in all (None: the env's own timeout)."""
        pool = self._pool
        limit = pool.timeout if timeout is None else check_timeout(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        payloads = self.payloads if workers is None else [b""] * len(workers)
        errors: list[bytes] = []
        for k, index in enumerate(range(self._count) if workers is None else workers):
            if deadline is not None:
                pool.wait_for_reply(index, max(deadline - time.monotonic(), 1e-3), when)
            try:
                payload = pool.read_reply_from(index, self._empty)
            except (EOFError, OSError):
                pool.worker_died(index, when)
            if payload is None:
                payload = b""
            elif payload.startswith(ERROR_MAGIC):
                errors.append(payload)  # read the others first: every env error is told
            payloads[k] = payload
        if errors:
            self._raise(0 if workers is None else workers[0], combine_errors(errors))
        if workers is None:
            pool.unread_replies = False
        return payloads

    def read_objects(self, timeout: float | None, when: str) -> list[Any]:
        """Every worker's pickled reply, unpickled and concatenated (call, get_attr)."""
        results: list[Any] = []
        for payload in self.read(timeout, when):
            results.extend(pickle.loads(payload))
        return results

    def _raise(self, index: int, payload: bytes) -> NoReturn:
        """Stop every worker and raise what an env raised (or the worker's own error)."""
        report = ErrorReport.decode(payload)
        if report is None or report.env is None:
            self._pool.raise_error_reply(report.worker if report else index, payload)
        # gymnasium's AsyncVectorEnv logs these lines; scripts that read them still can.
        for each in report.every():
            logger.error(f"Received the following error from Worker-{each.env} - "
                         "Shutting it down")
            logger.error(each.traceback)
        logger.error("Raising the last exception back to the main process.")
        others = ", ".join(str(each.env) for each in report.also)
        also = f"; env(s) {others} raised before it, logged above" if others else ""
        message = (f"env {report.env} raised {report.type_name}: {report.message}\n"
                   f"(in {self._pool.describe(report.worker)}{also}; all workers were stopped "
                   "and this env is closed: create a new one)\n\n"
                   f"Env traceback:\n{report.traceback}")
        self._pool.fail(env_error(message, report.type_name, report.traceback))


class CallsMixin:
    """gymnasium's ``call``/``call_async``/``call_wait``/``get_attr``/``set_attr``/``render``
    rules (the async state, the reserved names, one value per env or one for all, results
    in env order), over a transport a subclass supplies: the generic env's pipes
    (:class:`EnvCallsMixin`) or Ray actors (:mod:`shmenv.ray_calls`)."""

    num_envs: int
    _state: CallState

    if TYPE_CHECKING:  # the env's own (a stub here would shadow a base class's)
        def _check_open(self) -> None: ...

    def _start_call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Send ``name(*args, **kwargs)`` to every env and return at once."""
        raise NotImplementedError

    def _finish_call(self, timeout: float | None) -> list[Any]:
        """Every env's result of the call :meth:`_start_call` sent, in env order."""
        raise NotImplementedError

    def _set_values(self, name: str, values: Sequence[Any]) -> None:
        """Set ``name`` to ``values[i]`` in env i, and wait until every env has."""
        raise NotImplementedError

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call the method ``name`` of every env (or read the attribute) and return the
        results in env order."""
        self.call_async(name, *args, **kwargs)
        return self.call_wait()

    def call_async(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Start :meth:`call` and return at once (:meth:`call_wait` collects).

        Raises:
            ValueError: ``name`` is reset, step or close (call those directly).
            AlreadyPendingCallError: another ``*_async`` call waits for its ``*_wait``.
            ClosedEnvironmentError: the env is closed.
        """
        self._check_open()
        self._state.check_idle("call_async")
        if name in RESERVED_CALLS:
            raise ValueError(f"Trying to call function `{name}` with `call`, use `{name}` "
                             "directly instead.")
        self._start_call(name, args, kwargs)
        self._state.begin(AsyncState.WAITING_CALL)

    def call_wait(self, timeout: float | None = None) -> tuple[Any, ...]:
        """The results of the pending :meth:`call_async`, in env order.

        Raises:
            NoAsyncCallError: no ``call_async`` is pending.
            WorkerTimeoutError: no answer within ``timeout`` seconds; the env is closed.
        """
        self._check_open()
        self._state.end(AsyncState.WAITING_CALL)
        return tuple(self._finish_call(timeout))

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """The attribute ``name`` of every env (called, if it is a method, as gymnasium's
        ``get_attr`` does)."""
        return self.call(name)

    def set_attr(self, name: str, values: Any) -> None:
        """Set ``name`` in every env: a list or tuple gives one value per env, anything
        else is set in all of them."""
        self._check_open()
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError("Values must be a list or tuple with length equal to the number "
                             f"of environments. Got `{len(values)}` values for "
                             f"{self.num_envs} environments.")
        self._state.check_idle("set_attr")
        self._set_values(name, values)

    def render(self) -> tuple[Any, ...] | None:
        """Every env's ``render()``."""
        return self.call("render")

    # Per env, as gymnasium's AsyncVectorEnv (VectorEnv declares one value).
    @property  # type: ignore[misc]
    def np_random_seed(self) -> tuple[int, ...]:  # type: ignore[override]
        """Every env's ``np_random_seed``."""
        return self.get_attr("np_random_seed")

    @property  # type: ignore[misc]
    def np_random(self) -> tuple[np.random.Generator, ...]:  # type: ignore[override]
        """Every env's random generator (copies: the envs' own live elsewhere)."""
        return self.get_attr("np_random")


class EnvCallsMixin(CallsMixin):
    """:class:`CallsMixin` for the generic env: one pickled command to every worker, whose
    envs answer in env order."""

    num_workers: int
    _env_ranges: list[tuple[int, int]]
    _replies: Replies

    def _start_call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        frame = command_frame(OP_CALL, pickle.dumps((name, args, kwargs)))
        self._replies.send([frame] * self.num_workers)

    def _finish_call(self, timeout: float | None) -> list[Any]:
        return self._replies.read_objects(timeout, "in a call")

    def _set_values(self, name: str, values: Sequence[Any]) -> None:
        self._replies.send([command_frame(OP_SET_ATTR, pickle.dumps((name, values[a:b])))
                            for a, b in self._env_ranges])
        self._replies.read(None, "in set_attr")
