"""gymnasium's ``reset`` for the generic env: seeds and options checked, one command per worker.

``reset``/``reset_async``/``reset_wait`` as gymnasium's ``AsyncVectorEnv`` has them (an int
seed gives env i ``seed + i``, ``options["reset_mask"]`` resets only some envs); with async
batches ``reset`` follows envpool and returns the first ready envs.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shmenv.anybatch import ReadyBatches
from shmenv.anycalls import AsyncState, CallState, Replies, command_frame
from shmenv.anyoutputs import AnyOutputs, StepResult
from shmenv.anystart import check_reset_mask
from shmenv.planning import env_seeds
from shmenv.protocol import OP_RESET


class ResetMixin:
    """``reset``, ``reset_async``/``reset_wait`` and the reset commands for the generic env
    (whose :class:`~shmenv.anybatch.BatchMixin` gives ``async_reset`` and ``recv``)."""

    num_envs: int
    batch_size: int
    _env_ranges: list[tuple[int, int]]
    _state: CallState
    _replies: Replies
    _batches: ReadyBatches
    _outputs: AnyOutputs

    def _check_open(self) -> None:
        raise NotImplementedError

    if TYPE_CHECKING:  # BatchMixin's (stubs here would shadow them in the env's MRO)
        def async_reset(self, seed: int | Sequence[int | None] | None = None,
                        options: dict[str, Any] | None = None) -> None: ...

        def recv(self) -> StepResult: ...

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every env (or those ``options["reset_mask"]`` selects); ``seed``: an int
        seeds env i with ``seed + i``, a list gives each env its own.

        With async batches (``batch_size < num_envs``) this follows envpool: every env is
        reset and the first ``batch_size`` ready ones are returned, with
        ``infos["env_id"]``; the others come out of the next ``recv()`` calls."""
        if self.batch_size < self.num_envs:
            self.async_reset(seed=seed, options=options)
            obs, _rewards, _terminations, _truncations, infos = self.recv()
            return obs, infos
        self.reset_async(seed=seed, options=options)
        return self.reset_wait()

    def reset_async(self, seed: int | Sequence[int | None] | None = None,
                    options: dict[str, Any] | None = None) -> None:
        """Send every env its reset and return at once (:meth:`reset_wait` collects).
        ``options`` go to every env's ``reset`` except ``"reset_mask"``, a bool array of
        shape ``(num_envs,)`` choosing which envs reset (the others keep their state)."""
        self._check_open()
        frames = self._reset_frames(seed, options, "reset_async")
        self._batches.drop_all()
        self._replies.send(frames)
        self._state.begin(AsyncState.WAITING_RESET)

    def _reset_frames(self, seed: int | Sequence[int | None] | None,
                      options: dict[str, Any] | None, what: str) -> list[memoryview]:
        """Each worker's reset command, after gymnasium's checks of seeds and options."""
        seeds = env_seeds(seed, self.num_envs)
        self._state.check_idle(what)
        mask = None
        if options is not None and "reset_mask" in options:
            options = dict(options)
            mask = check_reset_mask(options.pop("reset_mask"), self.num_envs)
        return [command_frame(OP_RESET, pickle.dumps(
            (seeds[start:stop], options, None if mask is None else mask[start:stop])))
            for start, stop in self._env_ranges]

    def reset_wait(self, timeout: float | None = None) -> tuple[Any, dict[str, Any]]:
        """The ``(obs, infos)`` of the pending :meth:`reset_async` (errors as
        :meth:`step_wait`)."""
        self._check_open()
        self._state.end(AsyncState.WAITING_RESET)
        return self._outputs.reset_result(self._replies.read(timeout, "in a reset"))
