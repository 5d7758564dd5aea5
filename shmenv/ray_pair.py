"""gymnasium's async pair for both Ray envs: ``step``/``reset`` as ``*_async`` then ``*_wait``.

Each ``*_async`` starts one Ray task per actor and returns; its ``*_wait`` gathers them in
env order. The pending call is the env's :class:`shmenv.anycalls.CallState` (the one
``call_async`` uses too), the tasks are the :class:`shmenv.ray_group.ActorGroup`'s calls in
flight, and a wait past its ``timeout`` closes the env with a ``WorkerTimeoutError`` naming
the late actors, as ``call_wait`` does.
"""

from __future__ import annotations

import copy as copy_module
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from shmenv.anycalls import AsyncState, CallState
from shmenv.anystart import check_reset_mask
from shmenv.planning import check_timeout, env_seeds
from shmenv.ray_actors import StepResult, assemble_results, lay_rows, merge_infos, take_rows
from shmenv.ray_group import ActorGroup


class RayPairMixin:
    """``step``, ``reset`` and their ``*_async``/``*_wait`` halves over the actors, with
    gymnasium's ``AlreadyPendingCallError``/``NoAsyncCallError`` for misuse."""

    num_envs: int
    copy: bool
    _group: ActorGroup
    _state: CallState
    _obs: Any
    _reset_seeds: list[int | None] | None = None  # of the pending reset, for actor_infos

    if TYPE_CHECKING:  # the env's own (a stub here would shadow a base class's)
        def _check_open(self) -> None: ...

        def _check_actions(self, actions: Any, count: int) -> Any: ...

        def _check_reset_options(self, options: dict[str, Any] | None
                                 ) -> dict[str, Any] | None: ...

    # ----------------------------------------------------------------- step
    def step(self, actions: Any) -> StepResult:
        """Step every env once: one Ray task per actor, results gathered in env order."""
        self._start_step(actions, "step_async")  # gymnasium's step() is its async pair
        return self.step_wait()

    def step_async(self, actions: Any) -> None:
        """Send every actor its envs' actions and return at once; :meth:`step_wait`
        collects the results (gymnasium's ``AsyncVectorEnv`` contract).

        Raises:
            AlreadyPendingCallError: another ``*_async`` call waits for its ``*_wait``.
            RuntimeError: steps from ``send()`` are still in flight.
            ClosedEnvironmentError: the env is closed.
        """
        self._start_step(actions, "step_async")

    def _start_step(self, actions: Any, what: str) -> None:
        self._check_open()
        self._state.check_idle(what)
        if self._group.in_flight:
            raise RuntimeError(f"{len(self._group.in_flight)} actors still have a step in "
                               f"flight from send(); recv() them (or reset()) before {what}()")
        actions = self._check_actions(actions, self.num_envs)
        self._group.start_calls("step", [(take_rows(actions, slice(i.env_start, i.env_stop)),)
                                         for i in self._group.infos])
        self._state.begin(AsyncState.WAITING_STEP)

    def step_wait(self, timeout: float | None = None) -> StepResult:
        """The results of the pending :meth:`step_async`, exactly as :meth:`step` returns
        them.

        Args:
            timeout: seconds to wait for every actor; None: as long as it takes.

        Raises:
            NoAsyncCallError: no ``step_async`` is pending.
            WorkerTimeoutError: an actor did not answer in time; it is named, every actor
                is released and the env closed.
        """
        self._check_open()
        timeout = check_timeout(timeout)
        self._state.end(AsyncState.WAITING_STEP)
        obs, rewards, terminations, truncations, infos = assemble_results(
            self._group.collect_calls(timeout), self._obs)
        return ((copy_module.deepcopy(obs) if self.copy else obs), rewards, terminations,
                truncations, infos)

    # ----------------------------------------------------------------- reset
    def reset(
        self,
        *,
        seed: int | Sequence[int] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every env (discarding any step still in flight from ``send``, which its
        actor finishes first); ``seed`` and ``options`` as in :meth:`reset_async`."""
        self._start_reset(seed, options, "reset_async")
        return self.reset_wait()

    def reset_async(self, seed: int | Sequence[int] | None = None,
                    options: dict[str, Any] | None = None) -> None:
        """Start resetting every env and return once the actors have it; :meth:`reset_wait`
        collects. Steps still in flight from ``send`` are dropped: each actor finishes its
        step before the reset, and :meth:`reset_wait` waits for both within its timeout.

        ``seed=s`` reseeds env i with ``s + i`` across actors. With
        ``options={"reset_mask": mask}`` (any env) only the masked envs reset; an actor
        none of whose envs is masked is not called, and its rows keep the observations of
        the last synchronous step or reset.

        Raises:
            AlreadyPendingCallError: another ``*_async`` call waits for its ``*_wait``.
            ClosedEnvironmentError: the env is closed.
        """
        self._start_reset(seed, options, "reset_async")

    def _start_reset(self, seed: int | Sequence[int] | None,
                     options: dict[str, Any] | None, what: str) -> None:
        self._check_open()
        self._state.check_idle(what)
        options = self._check_reset_options(options)
        seeds = None if seed is None else env_seeds(seed, self.num_envs)
        mask = None
        if options and "reset_mask" in options:
            options = dict(options)
            mask = np.array(check_reset_mask(options.pop("reset_mask"), self.num_envs))
        self._group.drop_in_flight()
        infos = self._group.infos
        indices = [j for j, info in enumerate(infos)
                   if mask is None or mask[info.env_start:info.env_stop].any()]
        args = []
        for j in indices:
            start, stop = infos[j].env_start, infos[j].env_stop
            actor_options = options if mask is None else {**(options or {}),
                                                          "reset_mask": mask[start:stop]}
            actor_seeds = None if seeds is None else seeds[start:stop]
            args.append((actor_seeds,) if actor_options is None
                        else (actor_seeds, actor_options))
        self._group.start_calls("reset", args, indices)
        self._reset_seeds = seeds
        self._state.begin(AsyncState.WAITING_RESET)

    def reset_wait(self, timeout: float | None = None) -> tuple[Any, dict[str, Any]]:
        """Every env's ``(obs, infos)`` after the pending :meth:`reset_async`, exactly as
        :meth:`reset` returns them.

        Args:
            timeout: as in :meth:`step_wait`.

        Raises:
            NoAsyncCallError: no ``reset_async`` is pending.
            WorkerTimeoutError: as in :meth:`step_wait`.
        """
        self._check_open()
        timeout = check_timeout(timeout)
        self._state.end(AsyncState.WAITING_RESET)
        indices = self._group.call_indices
        results = self._group.collect_calls(timeout)
        infos_by_actor = self._group.infos
        seeds, self._reset_seeds = self._reset_seeds, None
        if seeds is not None:
            for j in indices:
                info = infos_by_actor[j]
                info.seeds = tuple(seeds[info.env_start:info.env_stop])
        out = lay_rows([obs for obs, _ in results], self._obs,
                       [infos_by_actor[j].env_start for j in indices])
        parts: list[dict[str, Any]] = [{} for _ in infos_by_actor]
        for j, (_, info) in zip(indices, results):
            parts[j] = info
        infos = merge_infos(parts, [i.env_stop - i.env_start for i in infos_by_actor])
        return (copy_module.deepcopy(out) if self.copy else out), infos
