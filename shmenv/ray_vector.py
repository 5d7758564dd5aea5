"""The VectorEnv face over Ray actors that both of :mod:`shmenv.ray`'s envs share: how envs
are split among actors, their start, async send/recv (reset and step: :mod:`shmenv.ray_pair`).

``import ray`` below is Ray itself (absolute imports), not :mod:`shmenv.ray`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import ray
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import batch_space, create_empty_array

from shmenv.actions import check_env_ids
from shmenv.anycalls import CallState
from shmenv.errors import ClosedError
from shmenv.lifecycle import ClosableEnvMixin
from shmenv.planning import split_envs
from shmenv.ray_actors import (
    ActorInfo,
    StepResult,
    assemble_results,
    release_actors,
    take_rows,
)
from shmenv.ray_group import ActorGroup
from shmenv.ray_pair import RayPairMixin


def plan_actors(num_envs: int, num_actors: int, workers_per_actor: int | None,
                batch_size: int | None) -> tuple[list[tuple[int, int]], int]:
    """Each actor's env range and the workers of each actor, or a ValueError naming the
    bad argument."""
    if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    if not isinstance(num_actors, (int, np.integer)) or not 1 <= num_actors <= num_envs:
        raise ValueError(f"num_actors must be an int in [1, num_envs={num_envs}], "
                         f"got {num_actors!r}")
    ranges = split_envs(int(num_envs), int(num_actors))
    smallest = min(stop - start for start, stop in ranges)
    if workers_per_actor is None:
        workers_per_actor = smallest
    if (not isinstance(workers_per_actor, (int, np.integer))
            or not 1 <= workers_per_actor <= smallest):
        raise ValueError(f"workers_per_actor must be an int in [1, {smallest}] (the "
                         f"smallest actor has {smallest} envs), got {workers_per_actor!r}")
    if batch_size is not None and not 1 <= batch_size <= num_envs:
        raise ValueError(f"batch_size must be in [1, num_envs={num_envs}], "
                         f"got {batch_size!r}")
    return ranges, int(workers_per_actor)


class RayVectorBase(RayPairMixin, ClosableEnvMixin, VectorEnv):
    """The VectorEnv face shared by both Ray envs: ``reset``/``step`` over all envs and
    their async pair (:class:`~shmenv.ray_pair.RayPairMixin`), async ``send``/``recv`` by
    whole actors, results laid end to end in env order. A subclass plans its actors, then
    calls :meth:`_launch`."""

    _env_class = "ShmVectorEnv"

    def _launch(self, ranges: list[tuple[int, int]], builders: list[Callable[[], Any]], *,
                workers_per_actor: int, cpus_per_actor: float | None,
                batch_size: int | None, copy: bool, address: str | None,
                scheduling_strategy: Any, startup_timeout: float) -> dict[str, Any]:
        """Start the actors; returns actor 0's description (spaces, metadata)."""
        me = weakref.ref(self)  # no cycle env -> group -> env: the finalizer stays prompt

        def shutdown(reason: str) -> None:
            env = me()
            if env is not None:
                env._shutdown(reason)

        self._group = ActorGroup(ranges, self._env_class, shutdown)
        self._state = CallState()  # the pending *_async call (step, reset, call), if any
        self._finalizer = weakref.finalize(self, release_actors, self._group.actors)
        self.num_envs = ranges[-1][1]
        self.num_actors = len(ranges)
        self.workers_per_actor = workers_per_actor
        self.cpus_per_actor = float(workers_per_actor if cpus_per_actor is None
                                    else cpus_per_actor)
        self.batch_size = batch_size
        self.copy = copy
        if not ray.is_initialized():
            ray.init(address=address)
        description = self._group.start(builders, self.cpus_per_actor, scheduling_strategy,
                                        startup_timeout)
        self.render_mode = description["render_mode"]
        self.single_observation_space = description["observation_space"]
        self.single_action_space = description["action_space"]
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._obs = create_empty_array(self.single_observation_space, self.num_envs)
        return description

    @property
    def actor_infos(self) -> list[ActorInfo]:
        """Where each actor runs and which envs it owns."""
        return self._group.infos

    # ----------------------------------------------------------------- per-kind rules
    def _check_actions(self, actions: Any, count: int) -> Any:
        """``actions`` for ``count`` envs, checked (subclasses say how)."""
        raise NotImplementedError

    def _check_reset_options(self, options: dict[str, Any] | None) -> dict[str, Any] | None:
        return options

    def _check_open(self) -> None:
        if self._closed_reason is not None:
            raise ClosedError(f"this {type(self).__name__} is closed ({self._closed_reason});"
                              " create a new one")

    # ----------------------------------------------------------------- async API
    def send(self, actions: Any, env_ids: Any = None) -> None:
        """Start a step on the actors owning ``env_ids`` (None: every env).

        ``actions[i]`` is the action for env ``env_ids[i]``. The ids must make up whole
        actors that are not already stepping: pass back the ids ``recv()`` returned.
        """
        self._check_open()
        self._state.check_idle("send")
        env_ids = (np.arange(self.num_envs) if env_ids is None
                   else check_env_ids(env_ids, self.num_envs))
        actions = self._check_actions(actions, len(env_ids))
        actors = self._group.actors_for(env_ids)
        busy = [index for index in actors if index in self._group.in_flight]
        if busy:
            names = ", ".join(self._group.infos[index].describe() for index in busy)
            raise RuntimeError(f"{names} still stepping: recv() its results before sending "
                               "it new actions")
        order = np.argsort(env_ids, kind="stable")  # actions by env id
        sorted_ids = env_ids[order]
        for index in actors:
            info = self._group.infos[index]
            first = int(np.searchsorted(sorted_ids, info.env_start))
            rows = order[first:first + info.env_stop - info.env_start]
            self._group.send(index, take_rows(actions, rows))

    def recv(self) -> StepResult:
        """Results of the actors that finished first: at least ``batch_size`` envs (default
        one actor's worth), rows in env-id order, ``infos["env_id"]`` naming each row.
        Arrays from ``recv`` are always fresh."""
        self._check_open()
        if not self._group.in_flight:
            raise RuntimeError("recv() with no step in flight: call send() first")
        ready, results = self._group.first_ready(self.batch_size or 1)
        obs, rewards, terminations, truncations, infos = assemble_results(results, None)
        infos["env_id"] = np.concatenate([
            np.arange(self._group.infos[index].env_start, self._group.infos[index].env_stop)
            for index in ready
        ])
        return obs, rewards, terminations, truncations, infos

    # ----------------------------------------------------------------- shutdown
    def _forget_in_flight(self) -> None:
        if getattr(self, "_group", None) is not None:
            self._group.in_flight.clear()
            self._group.calls_in_flight.clear()

    def close(self, **kwargs: Any) -> None:
        """Release every actor (safe to call more than once); warns, as gymnasium does, if
        a ``call_async`` is still pending."""
        if self._closed_reason is None:
            self._state.warn_if_pending()
        super().close(**kwargs)
