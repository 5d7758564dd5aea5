"""The learner's handle on the Ray actors of :mod:`shmenv.ray`: start them, call them, track
their steps in flight, and turn any Ray failure into an error naming the actor.

``import ray`` below is Ray itself (absolute imports), not :mod:`shmenv.ray`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import numpy as np
import ray
import ray.exceptions

from shmenv.errors import WorkerTimeoutError
from shmenv.ray_actors import (
    ActorInfo,
    ActorStartError,
    RemoteEnvActor,
    actor_error,
    ray_reason,
)


class ActorGroup:
    """k actors owning contiguous env ranges, as one group the vector env calls.

    ``shutdown(reason)`` is the owning env's: a failing actor closes the whole env (every
    actor released) before its named error is raised. ``actors`` is the list the env's
    finalizer releases.
    """

    def __init__(self, ranges: Sequence[tuple[int, int]], env_class: str,
                 shutdown: Callable[[str], None]) -> None:
        self.actors: list[Any] = []
        self.infos = [ActorInfo(j, start, stop, env_class=env_class)
                      for j, (start, stop) in enumerate(ranges)]
        self.in_flight: dict[int, Any] = {}  # actor index -> its step's object ref
        self.calls_in_flight: list[Any] = []  # an object ref per called actor (*_async)
        self.call_indices: list[int] = []  # the actors calls_in_flight are from, in order
        # (actor index, object ref) of steps from send() that a reset made stale: the
        # actors finish them first, and the reset's wait collects them within its timeout.
        self.stale_steps: list[tuple[int, Any]] = []
        self._env_actor = np.repeat(np.arange(len(ranges)),
                                    [stop - start for start, stop in ranges])
        self._shutdown = shutdown

    # ----------------------------------------------------------------- start-up
    def start(self, builders: Sequence[Callable[[], Any]], cpus_per_actor: float,
              scheduling_strategy: Any, timeout: float) -> dict[str, Any]:
        """Start one actor per builder and wait for them all; returns actor 0's
        description (its spaces and metadata)."""
        for build in builders:
            self.actors.append(RemoteEnvActor.options(
                num_cpus=cpus_per_actor, scheduling_strategy=scheduling_strategy,
            ).remote(build))
        refs = [actor.describe.remote() for actor in self.actors]
        _, not_ready = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        if not_ready:
            late = [self.infos[refs.index(ref)].describe() for ref in not_ready]
            total = ray.cluster_resources().get("CPU", 0)
            free = ray.available_resources().get("CPU", 0)
            self._shutdown("it failed to start")
            raise ActorStartError(
                f"{', '.join(late)} did not start within {timeout:.0f} s. Each actor asks "
                f"Ray for {cpus_per_actor:g} CPUs; the cluster has {total:g} CPUs, "
                f"{free:g} free. Add nodes, or lower workers_per_actor / cpus_per_actor.")
        descriptions = []
        for info, ref in zip(self.infos, refs):
            try:
                description = ray.get(ref)
            except ray.exceptions.RayError as exc:
                self._shutdown("it failed to start")
                raise ActorStartError(f"{info.describe()} failed to start: "
                                      f"{ray_reason(exc)}") from None
            info.pid, info.node_ip = description["pid"], description["node_ip"]
            info.worker_pids = tuple(description["worker_pids"])
            info.seeds = tuple(description["seeds"])
            descriptions.append(description)
        return descriptions[0]

    # ----------------------------------------------------------------- calls
    def get(self, refs: list[Any], indices: list[int]) -> list[Any]:
        """``ray.get`` the actors' results; any Ray failure becomes a shmenv error."""
        try:
            return ray.get(refs)
        except ray.exceptions.RayError:
            pass
        for ref, index in zip(refs, indices):  # find which actor failed, in order
            try:
                ray.get(ref)
            except ray.exceptions.RayError as exc:
                self.fail(index, exc)
        raise AssertionError("unreachable: ray.get failed but no single result did")

    def fail(self, index: int, exc: BaseException) -> NoReturn:
        info = self.infos[index]
        error = actor_error(info, exc)
        self._shutdown(f"{info.describe()} failed")
        raise error from None

    def start_calls(self, method: str, args: Sequence[tuple],
                    indices: Sequence[int] | None = None) -> None:
        """Call ``method(*args[k])`` on actor ``indices[k]`` (None: every actor, in order)
        and return at once (:meth:`collect_calls` waits for the results)."""
        self.call_indices = list(range(len(self.actors)) if indices is None else indices)
        self.calls_in_flight = [getattr(self.actors[index], method).remote(*a)
                                for index, a in zip(self.call_indices, args, strict=True)]

    def collect_calls(self, timeout: float | None) -> list[Any]:
        """The results of :meth:`start_calls`, in its actors' order. An actor that does
        not answer within ``timeout`` seconds (None: no limit) closes the env with a
        ``WorkerTimeoutError`` naming it, as a worker that does not answer does locally."""
        refs, self.calls_in_flight = self.calls_in_flight, []
        indices = self.call_indices
        stale, self.stale_steps = self.stale_steps, []
        if timeout is not None:
            waited = [ref for _index, ref in stale] + refs
            owners = [index for index, _ref in stale] + indices
            _, late = ray.wait(waited, num_returns=len(waited), timeout=timeout)
            if late:
                names = ", ".join(sorted({self.infos[owners[waited.index(ref)]].describe()
                                          for ref in late}))
                self._shutdown("an actor did not answer in time")
                raise WorkerTimeoutError(
                    f"{names} did not answer within {timeout:g} s; every actor was released "
                    "and this env is closed: create a new one")
        if stale:  # dropped, but an actor's error in them still raises
            self.get([ref for _index, ref in stale], [index for index, _ref in stale])
        return self.get(refs, indices)

    def actors_for(self, env_ids: np.ndarray) -> list[int]:
        """The actors owning ``env_ids``, which must be whole actors."""
        actors = sorted(set(self._env_actor[env_ids].tolist()))
        for index in actors:
            info = self.infos[index]
            owned = np.isin(np.arange(info.env_start, info.env_stop), env_ids)
            if not owned.all():
                raise ValueError(
                    f"env_ids must cover whole actors: {info.describe()} steps its envs "
                    f"together, but envs {np.arange(info.env_start, info.env_stop)[~owned]} "
                    "are missing. Pass exactly the env ids recv() returned."
                )
        return actors

    # ----------------------------------------------------------------- async steps
    def send(self, index: int, actions: Any) -> None:
        """Start a step on actor ``index``, which must not be stepping already."""
        self.in_flight[index] = self.actors[index].step.remote(actions)

    def first_ready(self, wanted: int) -> tuple[list[int], list[Any]]:
        """Wait until actors owning at least ``wanted`` envs have finished their steps
        (and take any others done by then); returns their indices, in order, and results."""
        pending = dict(self.in_flight)
        by_ref = {ref: index for index, ref in pending.items()}
        ready: list[int] = []
        ready_envs = 0
        while pending and ready_envs < wanted:
            refs = list(pending.values())
            ray.wait(refs, num_returns=1)  # sleeps until at least one actor is done
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in done:
                index = by_ref[ref]
                del pending[index]
                ready.append(index)
                info = self.infos[index]
                ready_envs += info.env_stop - info.env_start
        ready.sort()
        results = self.get([self.in_flight[index] for index in ready], ready)
        for index in ready:
            del self.in_flight[index]
        return ready, results

    def drop_in_flight(self) -> None:
        """Drop the steps still in flight (before a reset) without waiting for them: an
        actor runs its tasks in order, so it finishes them before the reset, and
        :meth:`collect_calls` waits for them within the reset's timeout."""
        self.stale_steps.extend(sorted(self.in_flight.items()))
        self.in_flight.clear()
