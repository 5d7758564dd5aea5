"""RayVectorEnv: one gymnasium VectorEnv over ShmVectorEnvs running in Ray actors.

Past one machine's cores, the envs have to live on other machines. Ray is the engine RL
people already run (RLlib's env runners sit on it), so shmenv scales out on Ray instead of
on a home-made RPC layer: k actors, each owning a :class:`~shmenv.vector.ShmVectorEnv` with
m envs on its node, presented to the learner as one batch of k*m envs.

Per step the learner sends each actor its slice of the actions (one Ray task per actor) and
gathers their results; observations travel through Ray's object store. Env ``i`` is seeded
``seed + i`` across actors, so a Ray env and a single-machine ShmVectorEnv with the same
seed and ``num_envs`` produce the same trajectories.

``import ray`` below is Ray itself (absolute imports), not this module.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import numpy as np

try:
    import ray
    import ray.exceptions
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("shmenv.ray needs Ray: pip install 'shmenv[ray]'") from exc

from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from shmenv.actions import check_actions, check_env_ids
from shmenv.errors import ClosedError
from shmenv.games import GameOptions, resolve_game
from shmenv.lifecycle import ClosableEnvMixin
from shmenv.planning import check_autoreset_mode, env_seeds, split_envs
from shmenv.ray_actors import (
    ActorError,
    ActorInfo,
    ActorLostError,
    ActorStartError,
    RemoteEnvActor,
    StepResult,
    actor_error,
    assemble_results,
    merge_infos,
    ray_reason,
    release_actors,
)

STARTUP_TIMEOUT_S = 300.0
__all__ = ["ActorError", "ActorLostError", "ActorStartError", "RayVectorEnv", "make"]


class RayVectorEnv(ClosableEnvMixin, VectorEnv):
    """``num_envs`` Atari games split over ``num_actors`` Ray actors, as one VectorEnv.

    Use :func:`shmenv.ray.make`. Actor j owns a contiguous range of envs (sizes differ by
    at most one) in a ShmVectorEnv with ``workers_per_actor`` worker processes, and asks
    Ray for ``cpus_per_actor`` CPUs (default: one per worker), so Ray places actors where
    there are free cores; ``scheduling_strategy="SPREAD"`` (the default) spreads them over
    the nodes.

    Sync: ``reset``/``step`` as in gymnasium, over all envs. Infos are the actors'
    ShmVectorEnv infos laid end to end (``lives``, ``episode``/``_episode``, and under
    SAME_STEP ``final_obs``/``_final_obs``), so row i always belongs to env i. With
    ``copy=False`` (default) the returned ``obs`` is a buffer reused by the next step.

    Async: ``send(actions, env_ids=None)`` starts a step on the actors owning ``env_ids``
    (whole actors: the ids ``recv`` returned, or None for all); ``recv()`` returns
    ``(obs, rewards, terminations, truncations, infos)`` for the actors that finished
    first (at least ``batch_size`` envs, default one actor's worth), rows in env-id order,
    ``infos["env_id"]`` saying which envs they are. Arrays from ``recv`` are always fresh.

    If an actor or its node is lost, or its ShmVectorEnv fails, every actor is released
    and a :class:`ActorLostError` / :class:`ActorError` names the actor and its envs.

    ``context`` is the start method of the workers inside each actor: "spawn" by default,
    because a Ray worker process is multi-threaded (gRPC) and forking it can hang.
    ``address`` is used only if Ray is not initialised yet (``ray.init(address=address)``);
    a Ray session started that way stays up after ``close()``. See docs/distributed.md.
    """

    def __init__(
        self,
        game: str = "Breakout",
        num_envs: int = 8,
        *,
        num_actors: int = 2,
        seed: int | Sequence[int] | None = None,
        workers_per_actor: int | None = None,
        cpus_per_actor: float | None = None,
        batch_size: int | None = None,
        copy: bool = False,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
        address: str | None = None,
        scheduling_strategy: Any = "SPREAD",
        context: str | None = "spawn",
        game_factory: Callable[..., Any] | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        **game_options: Any,
    ) -> None:
        self._closed_reason: str | None = "it was never fully started"
        self._actors: list[Any] = []
        self._finalizer = weakref.finalize(self, release_actors, self._actors)

        options = GameOptions.from_kwargs(dict(game_options))  # bad options fail here
        rom = resolve_game(game)
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if not isinstance(num_actors, (int, np.integer)) or not 1 <= num_actors <= num_envs:
            raise ValueError(f"num_actors must be an int in [1, num_envs={num_envs}], "
                             f"got {num_actors!r}")
        num_envs, num_actors = int(num_envs), int(num_actors)
        ranges = split_envs(num_envs, num_actors)
        smallest = min(stop - start for start, stop in ranges)
        if workers_per_actor is None:
            workers_per_actor = smallest
        if (not isinstance(workers_per_actor, (int, np.integer))
                or not 1 <= workers_per_actor <= smallest):
            raise ValueError(f"workers_per_actor must be an int in [1, {smallest}] (the "
                             f"smallest actor has {smallest} envs), got {workers_per_actor!r}")
        workers_per_actor = int(workers_per_actor)
        if cpus_per_actor is None:
            cpus_per_actor = float(workers_per_actor)
        if batch_size is not None and not 1 <= batch_size <= num_envs:
            raise ValueError(f"batch_size must be in [1, num_envs={num_envs}], "
                             f"got {batch_size!r}")
        autoreset_mode = check_autoreset_mode(autoreset_mode)
        seeds = env_seeds(seed, num_envs)

        self.game = rom
        self.options = options
        self.num_envs = num_envs
        self.num_actors = num_actors
        self.workers_per_actor = workers_per_actor
        self.cpus_per_actor = cpus_per_actor
        self.batch_size = batch_size
        self.copy = copy
        self.metadata = {"autoreset_mode": autoreset_mode}
        self.actor_infos = [ActorInfo(j, start, stop) for j, (start, stop) in enumerate(ranges)]
        self._env_actor = np.repeat(np.arange(num_actors), [stop - start for start, stop in ranges])
        self._in_flight: dict[int, Any] = {}

        if not ray.is_initialized():
            ray.init(address=address)
        for info in self.actor_infos:
            actor_seeds = None if seed is None else seeds[info.env_start:info.env_stop]
            self._actors.append(RemoteEnvActor.options(
                num_cpus=cpus_per_actor, scheduling_strategy=scheduling_strategy,
            ).remote(rom, info.env_stop - info.env_start, actor_seeds, workers_per_actor,
                     autoreset_mode.value, context, game_factory, dict(game_options)))
        num_actions = self._wait_for_actors(startup_timeout)

        self.single_observation_space = spaces.Box(0, 255, options.obs_shape, np.uint8)
        self.single_action_space = spaces.Discrete(num_actions)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._num_actions = num_actions
        self._obs = np.zeros((num_envs, *options.obs_shape), dtype=np.uint8)
        self._closed_reason = None

    # ----------------------------------------------------------------- start-up
    def _wait_for_actors(self, timeout: float) -> int:
        refs = [actor.describe.remote() for actor in self._actors]
        _, not_ready = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        if not_ready:
            late = [self.actor_infos[refs.index(ref)].describe() for ref in not_ready]
            total = ray.cluster_resources().get("CPU", 0)
            free = ray.available_resources().get("CPU", 0)
            self._shutdown("it failed to start")
            raise ActorStartError(
                f"{', '.join(late)} did not start within {timeout:.0f} s. Each actor asks "
                f"Ray for {self.cpus_per_actor:g} CPUs; the cluster has {total:g} CPUs, "
                f"{free:g} free. Add nodes, or lower workers_per_actor / cpus_per_actor."
            )
        num_actions = 0
        for index, ref in enumerate(refs):
            try:
                description = ray.get(ref)
            except ray.exceptions.RayError as exc:
                info = self.actor_infos[index]
                self._shutdown("it failed to start")
                raise ActorStartError(f"{info.describe()} failed to start: "
                                      f"{ray_reason(exc)}") from None
            info = self.actor_infos[index]
            info.pid, info.node_ip = description["pid"], description["node_ip"]
            info.worker_pids = tuple(description["worker_pids"])
            info.seeds = tuple(description["seeds"])
            num_actions = int(description["num_actions"])
        return num_actions

    # ----------------------------------------------------------------- helpers
    def _check_open(self) -> None:
        if self._closed_reason is not None:
            raise ClosedError(f"this RayVectorEnv is closed ({self._closed_reason}); "
                              "create a new one with shmenv.ray.make(...)")

    def _get_results(self, refs: list[Any], actor_indices: list[int]) -> list[Any]:
        """``ray.get`` the actors' results; any Ray failure becomes a shmenv error."""
        try:
            return ray.get(refs)
        except ray.exceptions.RayError:
            pass
        for ref, index in zip(refs, actor_indices):  # find which actor failed, in order
            try:
                ray.get(ref)
            except ray.exceptions.RayError as exc:
                self._fail(index, exc)
        raise AssertionError("unreachable: ray.get failed but no single result did")

    def _fail(self, index: int, exc: BaseException) -> NoReturn:
        info = self.actor_infos[index]
        error = actor_error(info, exc)
        self._shutdown(f"{info.describe()} failed")
        raise error from None

    def _actors_for(self, env_ids: np.ndarray) -> list[int]:
        """The actors owning ``env_ids``, which must be whole actors."""
        actors = sorted(set(self._env_actor[env_ids].tolist()))
        for index in actors:
            info = self.actor_infos[index]
            owned = np.isin(np.arange(info.env_start, info.env_stop), env_ids)
            if not owned.all():
                raise ValueError(
                    f"env_ids must cover whole actors: {info.describe()} steps its envs "
                    f"together, but envs {np.arange(info.env_start, info.env_stop)[~owned]} "
                    "are missing. Pass exactly the env ids recv() returned."
                )
        return actors

    # ----------------------------------------------------------------- sync API
    def reset(
        self,
        *,
        seed: int | Sequence[int] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env (waiting for, and discarding, any step still in flight).

        ``seed=s`` reseeds env i with ``s + i`` across actors; it reloads the ROMs, so do
        it once, not every episode.
        """
        self._check_open()
        if options:
            raise ValueError(f"RayVectorEnv.reset takes no options, got {sorted(options)}")
        seeds = None if seed is None else env_seeds(seed, self.num_envs)
        self._drain()
        refs = [
            actor.reset.remote(None if seeds is None else seeds[info.env_start:info.env_stop])
            for actor, info in zip(self._actors, self.actor_infos)
        ]
        indices = list(range(self.num_actors))
        results = self._get_results(refs, indices)
        if seeds is not None:
            for info in self.actor_infos:
                info.seeds = tuple(seeds[info.env_start:info.env_stop])
        obs_parts = [obs for obs, _ in results]
        sizes = [len(part) for part in obs_parts]
        out = self._obs
        row = 0
        for part in obs_parts:
            out[row:row + len(part)] = part
            row += len(part)
        infos = merge_infos([info for _, info in results], sizes)
        return (out.copy() if self.copy else out), infos

    def step(self, actions: Any) -> StepResult:
        """Step every env once: one Ray task per actor, results gathered in env order."""
        self._check_open()
        if self._in_flight:
            raise RuntimeError(f"{len(self._in_flight)} actors still have a step in flight "
                               "from send(); recv() them (or reset()) before step()")
        actions = check_actions(actions, self.num_envs, self._num_actions, self.game)
        refs = [actor.step.remote(actions[info.env_start:info.env_stop])
                for actor, info in zip(self._actors, self.actor_infos)]
        results = self._get_results(refs, list(range(self.num_actors)))
        obs, rewards, terminations, truncations, infos = assemble_results(results, self._obs)
        return (obs.copy() if self.copy else obs), rewards, terminations, truncations, infos

    # ----------------------------------------------------------------- async API
    def send(self, actions: Any, env_ids: Any = None) -> None:
        """Start a step on the actors owning ``env_ids`` (None: every env).

        ``actions[i]`` is the action for env ``env_ids[i]``. The ids must make up whole
        actors that are not already stepping: pass back the ids ``recv()`` returned.
        """
        self._check_open()
        env_ids = (np.arange(self.num_envs) if env_ids is None
                   else check_env_ids(env_ids, self.num_envs))
        actions = check_actions(actions, len(env_ids), self._num_actions, self.game)
        actors = self._actors_for(env_ids)
        busy = [index for index in actors if index in self._in_flight]
        if busy:
            names = ", ".join(self.actor_infos[index].describe() for index in busy)
            raise RuntimeError(f"{names} still stepping: recv() its results before sending "
                               "it new actions")
        by_env = np.empty(self.num_envs, dtype=np.int64)
        by_env[env_ids] = actions
        for index in actors:
            info = self.actor_infos[index]
            self._in_flight[index] = self._actors[index].step.remote(
                by_env[info.env_start:info.env_stop])

    def recv(self) -> StepResult:
        """Results of the actors that finished first: at least ``batch_size`` envs (default
        one actor's worth), rows in env-id order, ``infos["env_id"]`` naming each row."""
        self._check_open()
        if not self._in_flight:
            raise RuntimeError("recv() with no step in flight: call send() first")
        pending = dict(self._in_flight)
        by_ref = {ref: index for index, ref in pending.items()}
        wanted = self.batch_size or 1
        ready_actors: list[int] = []
        ready_envs = 0
        while pending and ready_envs < wanted:
            refs = list(pending.values())
            ray.wait(refs, num_returns=1)  # sleeps until at least one actor is done
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in done:
                index = by_ref[ref]
                del pending[index]
                ready_actors.append(index)
                info = self.actor_infos[index]
                ready_envs += info.env_stop - info.env_start
        ready_actors.sort()
        results = self._get_results([self._in_flight[index] for index in ready_actors],
                                    ready_actors)
        for index in ready_actors:
            del self._in_flight[index]
        obs, rewards, terminations, truncations, infos = assemble_results(results, None)
        infos["env_id"] = np.concatenate([
            np.arange(self.actor_infos[index].env_start, self.actor_infos[index].env_stop)
            for index in ready_actors
        ])
        return obs, rewards, terminations, truncations, infos

    def _drain(self) -> None:
        """Wait for steps still in flight and drop their results (before a reset)."""
        if self._in_flight:
            indices = sorted(self._in_flight)
            self._get_results([self._in_flight[index] for index in indices], indices)
            self._in_flight.clear()

    # ----------------------------------------------------------------- shutdown
    def _forget_in_flight(self) -> None:
        self._in_flight.clear()

    def __repr__(self) -> str:
        return (f"RayVectorEnv({self.game!r}, num_envs={self.num_envs}, "
                f"num_actors={self.num_actors})")


def make(
    game: str = "Breakout",
    num_envs: int = 8,
    *,
    num_actors: int = 2,
    seed: int | Sequence[int] | None = None,
    **kwargs: Any,
) -> RayVectorEnv:
    """Create a :class:`RayVectorEnv`: ``num_envs`` games over ``num_actors`` Ray actors.

    Connects to Ray first if needed (``address=...``, else Ray's default: ``RAY_ADDRESS``
    or a new local instance). Other keywords: see :class:`RayVectorEnv` and
    :func:`shmenv.make`.
    """
    return RayVectorEnv(game, num_envs, num_actors=num_actors, seed=seed, **kwargs)


