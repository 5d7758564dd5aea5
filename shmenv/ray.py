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

import os
import re
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import ray
    import ray.exceptions
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("shmenv.ray needs Ray: pip install 'shmenv[ray]'") from exc

from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from shmenv.actions import check_actions
from shmenv.errors import ClosedError, ShmenvError, WorkerDiedError, WorkerError
from shmenv.games import GameOptions, resolve_game
from shmenv.lifecycle import ClosableEnvMixin
from shmenv.planning import check_autoreset_mode, env_seeds, split_envs
from shmenv.vector import ShmVectorEnv

STARTUP_TIMEOUT_S = 300.0
_CLOSE_TIMEOUT_S = 10.0

StepResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]


class ActorLostError(WorkerDiedError):
    """A Ray actor (or the node it ran on) was lost while the learner waited for it."""


class ActorError(WorkerError):
    """A Ray actor's ShmVectorEnv raised; the message carries the actor's own error."""


class ActorStartError(ShmenvError):
    """Ray could not place or start an actor (too few CPUs in the cluster, a bad option)."""


class _EnvActor:
    """The code each Ray actor runs: one ShmVectorEnv on the actor's node.

    ``step`` returns the ShmVectorEnv's obs view of shared memory as it is: Ray serialises
    a method's return value (copying the array into its object store) before the actor
    runs its next method, and the view only changes on the next step, so nothing outside
    this process ever sees the shared block.
    """

    def __init__(self, game: str, num_envs: int, seeds: list[int] | None, num_workers: int,
                 autoreset_mode: str, context: str | None,
                 game_factory: Callable[..., Any] | None,
                 game_options: dict[str, Any]) -> None:
        self.env = ShmVectorEnv(game, num_envs, seed=seeds, num_workers=num_workers,
                                copy=False, autoreset_mode=autoreset_mode, context=context,
                                game_factory=game_factory, **game_options)

    def describe(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "node_ip": ray.util.get_node_ip_address(),
            "worker_pids": list(self.env.worker_pids),
            "seeds": list(self.env.seeds),
            "num_actions": int(self.env.single_action_space.n),
        }

    def reset(self, seeds: list[int] | None) -> tuple[np.ndarray, dict[str, Any]]:
        return self.env.reset(seed=seeds)

    def step(self, actions: np.ndarray) -> StepResult:
        return self.env.step(actions)

    def close(self) -> None:
        self.env.close()


_RemoteEnvActor = ray.remote(max_restarts=0, max_task_retries=0)(_EnvActor)


@dataclass
class ActorInfo:
    """Where one actor runs and which envs it owns, for error messages and tests."""

    index: int
    env_start: int
    env_stop: int
    pid: int | None = None
    node_ip: str | None = None
    worker_pids: tuple[int, ...] = ()
    seeds: tuple[int | None, ...] = ()

    def describe(self) -> str:
        start, stop = self.env_start, self.env_stop
        envs = f"env {start}" if stop - start == 1 else f"envs {start}-{stop - 1}"
        where = ", ".join(part for part in (
            f"node {self.node_ip}" if self.node_ip else "",
            f"pid {self.pid}" if self.pid else "",
        ) if part)
        return f"shmenv Ray actor {self.index} ({envs}" + (f", {where})" if where else ")")


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
        self._finalizer = weakref.finalize(self, _release_actors, self._actors)

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
            self._actors.append(_RemoteEnvActor.options(
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
                                      f"{_ray_reason(exc)}") from None
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

    def _fail(self, index: int, exc: BaseException) -> None:
        info = self.actor_infos[index]
        cause = getattr(exc, "cause", None)
        if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, ShmenvError):
            kind = ActorLostError if isinstance(cause, WorkerDiedError) else ActorError
            error: ShmenvError = kind(
                f"{info.describe()} failed: its ShmVectorEnv (envs numbered from 0 within "
                f"the actor) raised {type(cause).__name__}: {str(cause).rstrip('.')}")
        elif isinstance(exc, ray.exceptions.RayTaskError):
            error = ActorError(f"{info.describe()} raised {_ray_reason(exc)}")
        else:
            error = ActorLostError(
                f"{info.describe()} was lost ({type(exc).__name__}: {_ray_reason(exc)})"
            )
        self._shutdown(f"{info.describe()} failed")
        error.args = (error.args[0].rstrip(".") + ". Every actor was released and this env "
                      "is closed; create a new one.",)
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

    def _assemble(self, results: list[StepResult], actor_indices: list[int],
                  out: np.ndarray | None) -> StepResult:
        obs_parts = [result[0] for result in results]
        if out is None:
            obs = np.concatenate(obs_parts)
        else:
            row = 0
            for part in obs_parts:
                out[row:row + len(part)] = part
                row += len(part)
            obs = out
        rewards = np.concatenate([result[1] for result in results])
        terminations = np.concatenate([result[2] for result in results])
        truncations = np.concatenate([result[3] for result in results])
        sizes = [len(part) for part in obs_parts]
        infos = _merge_infos([result[4] for result in results], sizes)
        return obs, rewards, terminations, truncations, infos

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
        infos = _merge_infos([info for _, info in results], sizes)
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
        obs, rewards, terminations, truncations, infos = self._assemble(
            results, list(range(self.num_actors)), self._obs)
        return (obs.copy() if self.copy else obs), rewards, terminations, truncations, infos

    # ----------------------------------------------------------------- async API
    def send(self, actions: Any, env_ids: Any = None) -> None:
        """Start a step on the actors owning ``env_ids`` (None: every env).

        ``actions[i]`` is the action for env ``env_ids[i]``. The ids must make up whole
        actors that are not already stepping: pass back the ids ``recv()`` returned.
        """
        self._check_open()
        if env_ids is None:
            env_ids = np.arange(self.num_envs)
        env_ids = np.asarray(env_ids)
        if env_ids.ndim != 1 or env_ids.dtype.kind not in "iu":
            raise TypeError(f"env_ids must be a 1-D array of ints, got {env_ids!r}")
        if env_ids.size == 0:
            raise ValueError("env_ids is empty: nothing to send")
        if env_ids.min() < 0 or env_ids.max() >= self.num_envs:
            raise ValueError(f"env_ids must be in [0, {self.num_envs}), got {env_ids}")
        if len(np.unique(env_ids)) != len(env_ids):
            raise ValueError(f"env_ids has duplicates: {env_ids}")
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
        obs, rewards, terminations, truncations, infos = self._assemble(
            results, ready_actors, None)
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


# --------------------------------------------------------------------- module helpers
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _ray_reason(exc: BaseException) -> str:
    """A one-paragraph reason from a Ray exception, without Ray's traceback."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and cause is not None:
        return f"{type(cause).__name__}: {cause}"
    text = _ANSI_ESCAPE.sub("", str(exc))  # Ray colours some names for terminals
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__


def _blank_rows(sample: np.ndarray, rows: int) -> np.ndarray:
    if sample.dtype == object:
        return np.full(rows, None, dtype=object)
    return np.zeros((rows, *sample.shape[1:]), dtype=sample.dtype)


def _merge_infos(parts: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    """Lay per-actor infos end to end, so row i of every array belongs to the i-th env of
    the batch. A key some actors lack (no episode ended there) gets blank rows: zeros,
    False masks, None objects."""
    keys: list[str] = []
    for part in parts:
        keys.extend(key for key in part if key not in keys)
    merged: dict[str, Any] = {}
    for key in keys:
        values = [part.get(key) for part in parts]
        sample = next(value for value in values if value is not None)
        if isinstance(sample, dict):
            merged[key] = _merge_infos([value or {} for value in values], sizes)
            continue
        sample = np.asarray(sample)
        merged[key] = np.concatenate([
            _blank_rows(sample, rows) if value is None else np.asarray(value)
            for value, rows in zip(values, sizes)
        ])
    return merged


def _release_actors(actors: list[Any]) -> None:
    """Close each actor's ShmVectorEnv (its workers exit, its block is freed), then kill
    the actor so Ray frees its CPUs. Module-level so ``weakref.finalize`` can run it."""
    if not actors:
        return
    if ray.is_initialized():
        closing = []
        for actor in actors:
            try:
                closing.append(actor.close.remote())
            except Exception:  # noqa: BLE001 - a dead actor cannot close; kill it below
                pass
        deadline = time.monotonic() + _CLOSE_TIMEOUT_S
        remaining = closing
        while remaining and time.monotonic() < deadline:
            try:
                _, remaining = ray.wait(remaining, num_returns=len(remaining),
                                        timeout=max(deadline - time.monotonic(), 0.0))
            except Exception:  # noqa: BLE001
                break
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
    actors.clear()
