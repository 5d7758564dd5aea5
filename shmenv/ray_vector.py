"""The VectorEnv face over Ray actors that both of :mod:`shmenv.ray`'s envs share: how envs
are split among actors, reset, step, async send/recv, results laid end to end.

``import ray`` below is Ray itself (absolute imports), not :mod:`shmenv.ray`.
"""

from __future__ import annotations

import copy as copy_module
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import ray
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import batch_space, create_empty_array

from shmenv.actions import check_env_ids
from shmenv.anycalls import CallState
from shmenv.anystart import check_reset_mask
from shmenv.errors import ClosedError
from shmenv.lifecycle import ClosableEnvMixin
from shmenv.planning import env_seeds, split_envs
from shmenv.ray_actors import (
    ActorInfo,
    StepResult,
    assemble_results,
    lay_rows,
    merge_infos,
    release_actors,
    take_rows,
)
from shmenv.ray_group import ActorGroup


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


class RayVectorBase(ClosableEnvMixin, VectorEnv):
    """The VectorEnv face shared by both Ray envs: ``reset``/``step`` over all envs, async
    ``send``/``recv`` by whole actors, results laid end to end in env order. A subclass
    plans its actors, then calls :meth:`_launch`."""

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
        self._state = CallState()  # gymnasium's pending call (call_async), if any
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

    # ----------------------------------------------------------------- sync API
    def reset(
        self,
        *,
        seed: int | Sequence[int] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every env (waiting for, and discarding, any step still in flight).

        ``seed=s`` reseeds env i with ``s + i`` across actors. With
        ``options={"reset_mask": mask}`` (any env) only the masked envs reset; an actor
        none of whose envs is masked is not called, and its rows keep the observations of
        the last synchronous step or reset.
        """
        self._check_open()
        self._state.check_idle("reset")
        options = self._check_reset_options(options)
        seeds = None if seed is None else env_seeds(seed, self.num_envs)
        mask = None
        if options and "reset_mask" in options:
            options = dict(options)
            mask = np.array(check_reset_mask(options.pop("reset_mask"), self.num_envs))
        self._group.drain()
        infos_by_actor = self._group.infos
        indices = [j for j, info in enumerate(infos_by_actor)
                   if mask is None or mask[info.env_start:info.env_stop].any()]
        args = []
        for j in indices:
            start, stop = infos_by_actor[j].env_start, infos_by_actor[j].env_stop
            actor_options = options if mask is None else {**(options or {}),
                                                          "reset_mask": mask[start:stop]}
            actor_seeds = None if seeds is None else seeds[start:stop]
            args.append((actor_seeds,) if actor_options is None
                        else (actor_seeds, actor_options))
        results = self._group.call_all("reset", args, indices)
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

    def step(self, actions: Any) -> StepResult:
        """Step every env once: one Ray task per actor, results gathered in env order."""
        self._check_open()
        self._state.check_idle("step")
        if self._group.in_flight:
            raise RuntimeError(f"{len(self._group.in_flight)} actors still have a step in "
                               "flight from send(); recv() them (or reset()) before step()")
        actions = self._check_actions(actions, self.num_envs)
        infos = self._group.infos
        results = self._group.call_all(
            "step", [(take_rows(actions, slice(i.env_start, i.env_stop)),) for i in infos],
            range(len(infos)))
        obs, rewards, terminations, truncations, info = assemble_results(results, self._obs)
        return ((copy_module.deepcopy(obs) if self.copy else obs), rewards, terminations,
                truncations, info)

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
