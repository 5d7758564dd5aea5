"""gymnasium's async pair for ShmVectorEnv: the ``*_async``/``*_wait`` halves of step and reset.

Each ``*_async`` sends every env its command and returns; its ``*_wait`` reads the replies.
The pending call is a state of the env's :class:`shmenv.batching.AsyncBatcher`
(``BatchState.WAITING_STEP``/``WAITING_RESET``), the one object that tracks what is in
flight, so a pending call and async batches exclude each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shmenv.actions import check_actions
from shmenv.all_envs import AllEnvs
from shmenv.batching import AsyncBatcher, BatchState
from shmenv.outputs import StepOutput
from shmenv.planning import check_timeout
from shmenv.pool import WorkerPool


class AsyncPairMixin:
    """gymnasium's ``AsyncVectorEnv`` halves of ``step`` and ``reset`` for
    :class:`shmenv.ShmVectorEnv`, with gymnasium's ``AlreadyPendingCallError`` and
    ``NoAsyncCallError``."""

    num_envs: int
    game: str
    _num_actions: int
    _pool: WorkerPool
    _all_envs: AllEnvs
    _batcher: AsyncBatcher

    def _check_open(self) -> None:
        raise NotImplementedError

    def _send_reset(self, seed: int | Sequence[int] | None) -> None:
        raise NotImplementedError

    def step_async(self, actions: Any) -> None:
        """Send every env its action and return at once; :meth:`step_wait` collects the
        results (gymnasium's ``AsyncVectorEnv`` contract).

        Raises:
            AlreadyPendingCallError: a ``step_async``/``reset_async`` is still waiting for
                its ``*_wait`` (gymnasium's error), or async batches are in flight.
            ClosedError: the env is closed (also a gymnasium ``ClosedEnvironmentError``).
        """
        self._check_open()
        actions = check_actions(actions, self.num_envs, self._num_actions, self.game)
        self._batcher.check_idle("step_async(actions)")
        self._pool.resynchronize()
        self._all_envs.send_step(actions)
        self._batcher.start_call(BatchState.WAITING_STEP)

    def step_wait(self, timeout: float | None = None) -> StepOutput:
        """The results of the last :meth:`step_async`, as :meth:`step` returns them.

        Args:
            timeout: seconds to wait for every worker's reply; None: the env's own
                ``timeout`` (by default none: wait as long as it takes).

        Raises:
            NoAsyncCallError: no ``step_async`` is pending (gymnasium's error).
            WorkerTimeoutError: a worker did not answer in time; it is named, killed, and
                the env closed (also the builtin and multiprocessing ``TimeoutError``).
        """
        self._check_open()
        timeout = check_timeout(timeout)
        self._batcher.finish_call(BatchState.WAITING_STEP)
        return self._all_envs.read_step(self._pool.timeout if timeout is None else timeout)

    def reset_async(self, seed: int | Sequence[int] | None = None,
                    options: dict[str, Any] | None = None) -> None:
        """Start resetting every env and return at once; :meth:`reset_wait` collects the
        observations. ``seed`` as in :meth:`reset`; results of async batches still in
        flight are dropped.

        Raises:
            AlreadyPendingCallError: a ``step_async``/``reset_async`` is still waiting for
                its ``*_wait`` (gymnasium's error).
        """
        self._check_open()
        if options:
            raise ValueError(f"ShmVectorEnv.reset takes no options, got {sorted(options)}")
        self._batcher.check_no_pending("reset_async()")
        self._batcher.drop_in_flight()
        self._send_reset(seed)
        self._batcher.start_call(BatchState.WAITING_RESET)

    def reset_wait(self, timeout: float | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Every env's ``(obs, infos)`` after the last :meth:`reset_async`.

        Args:
            timeout: as in :meth:`step_wait`.

        Raises:
            NoAsyncCallError: no ``reset_async`` is pending (gymnasium's error).
            WorkerTimeoutError: as in :meth:`step_wait`.
        """
        self._check_open()
        timeout = check_timeout(timeout)
        self._batcher.finish_call(BatchState.WAITING_RESET)
        return self._all_envs.read_reset(self._pool.timeout if timeout is None else timeout)
