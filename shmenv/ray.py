"""shmenv on Ray: one gymnasium VectorEnv over vector envs running in Ray actors.

Past one machine's cores, the envs have to live on other machines. Ray is the engine RL
people already run (RLlib's env runners sit on it), so shmenv scales out on Ray instead of
on a home-made RPC layer: k actors, each owning a shmenv vector env with m envs on its
node, presented to the learner as one batch of k*m envs. :class:`RayVectorEnv` runs Atari
games (a :class:`~shmenv.vector.ShmVectorEnv` per actor); :class:`RayAsyncVectorEnv` runs any
gymnasium env from a list of env functions (a ``shmenv.AsyncVectorEnv`` per actor).

Per step the learner sends each actor its slice of the actions (one Ray task per actor) and
gathers their results; observations travel through Ray's object store. Env ``i`` is seeded
``seed + i`` across actors, so a Ray env and a single-machine env with the same seed and
``num_envs`` produce the same trajectories.

``import ray`` below is Ray itself (absolute imports), not this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, cast

import numpy as np

try:
    import ray  # noqa: F401  (only to say what is missing, before the modules that use it)
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("shmenv.ray needs Ray: pip install 'shmenv[ray]'") from exc

from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import create_empty_array

from shmenv.actions import check_actions
from shmenv.anyspaces import fits_block, write_actions
from shmenv.games import GameOptions, resolve_game
from shmenv.planning import check_autoreset_mode, env_seeds
from shmenv.ray_actors import ActorError, ActorLostError, ActorStartError
from shmenv.ray_calls import RayCallsMixin
from shmenv.ray_vector import RayVectorBase, plan_actors
from shmenv.vector import ShmVectorEnv

STARTUP_TIMEOUT_S = 300.0
__all__ = ["ActorError", "ActorLostError", "ActorStartError", "AsyncVectorEnv",
           "RayAsyncVectorEnv", "RayVectorEnv", "make"]


class RayVectorEnv(RayVectorBase):
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
        options = GameOptions.from_kwargs(dict(game_options))  # bad options fail here
        rom = resolve_game(game)
        ranges, workers = plan_actors(num_envs, num_actors, workers_per_actor, batch_size)
        autoreset_mode = check_autoreset_mode(autoreset_mode)
        seeds = env_seeds(seed, ranges[-1][1])
        self.game = rom
        self.options = options
        self.metadata = {"autoreset_mode": autoreset_mode}
        builders: list[Callable[[], Any]] = [
            partial(ShmVectorEnv, rom, stop - start,
                    seed=None if seed is None else cast(list[int], seeds[start:stop]),
                    num_workers=workers,
                    copy=False, autoreset_mode=autoreset_mode, context=context,
                    game_factory=game_factory, **game_options)
            for start, stop in ranges]
        description = self._launch(
            ranges, builders, workers_per_actor=workers, cpus_per_actor=cpus_per_actor,
            batch_size=batch_size, copy=copy, address=address,
            scheduling_strategy=scheduling_strategy, startup_timeout=startup_timeout)
        self._num_actions = int(description["action_space"].n)
        self._closed_reason = None

    def _check_actions(self, actions: Any, count: int) -> np.ndarray:
        return check_actions(actions, count, self._num_actions, self.game)

    def _check_reset_options(self, options: dict[str, Any] | None) -> None:
        if options:
            raise ValueError(f"RayVectorEnv.reset takes no options, got {sorted(options)}")
        return None

    def __repr__(self) -> str:
        return (f"RayVectorEnv({self.game!r}, num_envs={self.num_envs}, "
                f"num_actors={self.num_actors})")


# np_random(_seed) are per env (CallsMixin), as gymnasium's AsyncVectorEnv has them.
class RayAsyncVectorEnv(RayCallsMixin, RayVectorBase):  # type: ignore[misc]
    """Any gymnasium env over ``num_actors`` Ray actors, as one VectorEnv: the Ray twin of
    ``shmenv.AsyncVectorEnv`` (also importable as ``shmenv.ray.AsyncVectorEnv``).

    ``env_fns`` are split into contiguous ranges, one per actor (sizes differ by at most
    one); each actor runs its range in a ``shmenv.AsyncVectorEnv`` with
    ``workers_per_actor`` worker processes, built with ``vector_options`` (any keyword of
    ``shmenv.AsyncVectorEnv``: ``shared_memory``, ``observation_mode``, ``cpu_affinity``,
    ...). The env functions must pickle (Ray uses cloudpickle, so lambdas do). Seeding is
    gymnasium's: ``reset(seed=s)`` gives env i the seed ``s + i`` across actors. Autoreset,
    infos and their ``_key`` masks are the actors' own, laid end to end; ``reset`` takes
    ``options`` (``reset_mask`` included). ``call``/``call_async``/``call_wait``,
    ``get_attr``, ``set_attr`` and ``render`` are the local env's (results in env order,
    gymnasium's errors for a pending call or a closed env; an env's error in a call is also
    of the env's builtin type and closes the env). ``send``/``recv``, errors, ``close`` and
    the Ray arguments are those of :class:`RayVectorEnv`; ``copy`` defaults to True, as in
    gymnasium.
    """

    _env_class = "AsyncVectorEnv"

    def __init__(
        self,
        env_fns: Sequence[Callable[[], Any]],
        *,
        num_actors: int = 2,
        workers_per_actor: int | None = None,
        cpus_per_actor: float | None = None,
        batch_size: int | None = None,
        copy: bool = True,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        address: str | None = None,
        scheduling_strategy: Any = "SPREAD",
        context: str | None = "spawn",
        startup_timeout: float = STARTUP_TIMEOUT_S,
        **vector_options: Any,
    ) -> None:
        self._closed_reason: str | None = "it was never fully started"
        env_fns = list(env_fns)
        not_callable = [i for i, fn in enumerate(env_fns) if not callable(fn)]
        if not_callable:
            raise TypeError(f"env_fns[{not_callable[0]}] is {env_fns[not_callable[0]]!r}, "
                            "not a function returning an env")
        ranges, workers = plan_actors(len(env_fns), num_actors, workers_per_actor,
                                      batch_size)
        autoreset_mode = AutoresetMode(autoreset_mode)
        import shmenv

        builders: list[Callable[[], Any]] = [
            partial(shmenv.AsyncVectorEnv, env_fns[start:stop], num_workers=workers,
                    copy=False, context=context, autoreset_mode=autoreset_mode,
                    **vector_options)
            for start, stop in ranges]
        description = self._launch(
            ranges, builders, workers_per_actor=workers, cpus_per_actor=cpus_per_actor,
            batch_size=batch_size, copy=copy, address=address,
            scheduling_strategy=scheduling_strategy, startup_timeout=startup_timeout)
        self.metadata = {**description["metadata"], "autoreset_mode": autoreset_mode}
        self._closed_reason = None

    def _check_actions(self, actions: Any, count: int) -> Any:
        """The batch checked for shape and type as ``shmenv.AsyncVectorEnv`` checks it (an
        error names what is wrong; nothing is sent), then passed on as given, so that each
        actor's envs get what they would locally; for spaces the block cannot hold, one row
        per env in every array. Values are the envs' to judge, as under gymnasium."""
        space = self.single_action_space
        if fits_block(space):
            write_actions(space, create_empty_array(space, count), actions)

        def rows(leaf: Any) -> Any:
            if isinstance(leaf, dict):
                return {key: rows(value) for key, value in leaf.items()}
            if isinstance(leaf, tuple):
                return tuple(rows(value) for value in leaf)
            array = np.asarray(leaf)
            if array.ndim == 0 or len(array) != count:
                raise ValueError(f"actions must have one row per env ({count}), got an "
                                 f"array of shape {array.shape}")
            return array
        return rows(actions)

    def __repr__(self) -> str:
        return f"RayAsyncVectorEnv(num_envs={self.num_envs}, num_actors={self.num_actors})"


AsyncVectorEnv = RayAsyncVectorEnv


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
    :func:`shmenv.make`. For any gymnasium env, see :class:`RayAsyncVectorEnv`.
    """
    return RayVectorEnv(game, num_envs, num_actors=num_actors, seed=seed, **kwargs)
