"""ShmVectorEnv: the gymnasium VectorEnv over a worker pool, observations in shared memory.

The main process's whole job per step: validate the actions, send the workers one small
message, read one small reply, and turn the replies into numpy arrays. Per-env work in the
main process is numpy over the batch, never a Python loop. Processes and pipes belong to
:class:`shmenv.pool.WorkerPool`, commands to every env at once to
:class:`shmenv.all_envs.AllEnvs`, async batches to :class:`shmenv.batching.AsyncBatcher`;
the asynchronous APIs are mixins: envpool's ``send``/``recv``
(:class:`shmenv.batching.EnvpoolApiMixin`) and gymnasium's ``*_async``/``*_wait`` pair
(:class:`shmenv.async_pair.AsyncPairMixin`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from shmenv.actions import check_actions
from shmenv.all_envs import AllEnvs
from shmenv.async_pair import AsyncPairMixin
from shmenv.batching import AsyncBatcher, EnvpoolApiMixin
from shmenv.block import SharedBlock
from shmenv.env_plan import EnvPlan
from shmenv.errors import ClosedError
from shmenv.game import GameFactory
from shmenv.lifecycle import PoolOwnerMixin
from shmenv.outputs import StepOutput, StepOutputs
from shmenv.planning import DEFAULT_RELAY_FANOUT, env_seeds
from shmenv.pool import WorkerPool, release


class ShmVectorEnv(EnvpoolApiMixin, AsyncPairMixin, PoolOwnerMixin, VectorEnv):
    """Many Atari games in worker processes, observations in one shared-memory block.

    Use :func:`shmenv.make` to build one. ``reset``/``step`` follow gymnasium's VectorEnv
    API. With ``copy=False`` (the default) the returned ``obs`` is a view of the shared
    block: it is valid until the next ``step``/``reset`` call, which overwrites it in
    place. Copy it (or pass ``copy=True``) to keep it longer. Rewards, flags and infos are
    always fresh arrays.

    The obs view is read-only: writing to it raises numpy's ``ValueError`` (assignment
    destination is read-only) instead of corrupting the env's next stacks.

    Infos every step (with their ``_key`` masks): ``"lives"``, ``"reward"`` (the raw reward,
    before ``reward_clip``), ``"terminated"`` (a real game over: not a lost life, not a cap)
    and ``"elapsed_step"`` (agent steps of the episode, or of the game under
    ``on_life_loss="end_episode"``); at a done step under ``SAME_STEP`` they describe the
    step that ended, not the reset that followed it. When an episode ends, ``"episode"``
    with ``"r"``, ``"l"``, ``"t"`` and the ``"_episode"`` mask, exactly as gymnasium's
    ``RecordEpisodeStatistics`` reports them (under ``on_life_loss="end_episode"`` only
    when the game ends: ``"r"`` is the game's raw score, ``"l"`` its agent steps); under
    ``SAME_STEP`` autoreset also
    ``"final_obs"`` (an object array holding the ended episode's last stack for each env
    that finished, None elsewhere) and ``"_final_obs"``.

    Every constructor argument is documented once, on :func:`shmenv.make`.

    Async batches (``batch_size < num_envs``, envpool's API): ``send(actions, env_ids)`` and
    ``recv()``; see :mod:`shmenv.batching` and docs/scaling.md.

    gymnasium's async pair is here too: ``step_async(actions)`` / ``step_wait(timeout)``
    and ``reset_async(seed, options)`` / ``reset_wait(timeout)``, with its
    ``AlreadyPendingCallError`` and ``NoAsyncCallError`` (:mod:`shmenv.async_pair`).

    An env belongs to the process that created it: used from a forked child it raises
    :class:`shmenv.ForkedEnvError`, and the child's exit leaves the parent's workers
    alone (see docs/reliability.md). It cannot be pickled: create it where it is used
    (give the other process the arguments of :func:`shmenv.make`).
    """

    single_action_space: spaces.Discrete  # the game's action set (narrows VectorEnv's Space)

    def __init__(
        self,
        game: str = "Breakout",
        num_envs: int = 8,
        *,
        seed: int | Sequence[int] | None = None,
        num_workers: int | None = None,
        copy: bool = False,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
        context: str | None = None,
        game_factory: GameFactory | None = None,
        batch_size: int | None = None,
        cpu_affinity: bool | Sequence[int] = False,
        worker_spin_us: float | None = None,
        relay_fanout: int = DEFAULT_RELAY_FANOUT,
        raw_pipes: bool = True,
        timeout: float | None = None,
        **game_options: Any,
    ) -> None:
        self._closed_reason: str | None = "it was never fully started"
        plan = EnvPlan.from_args(  # every check, before anything exists that could leak
            game, num_envs, seed=seed, num_workers=num_workers, autoreset_mode=autoreset_mode,
            batch_size=batch_size, cpu_affinity=cpu_affinity, worker_spin_us=worker_spin_us,
            relay_fanout=relay_fanout, raw_pipes=raw_pipes, timeout=timeout,
            game_options=game_options)
        self._plan = plan
        self._env_ranges = plan.env_ranges  # read by PoolOwnerMixin
        self.game = plan.game
        self.options = plan.options
        self.num_envs = num_envs = plan.num_envs
        self.num_workers = plan.num_workers
        self.copy = copy
        self.metadata = {"autoreset_mode": plan.autoreset_mode}
        self.batch_size = plan.batch_size
        self._seeds = plan.seeds

        self._block = SharedBlock.create(plan.block_layout)
        self._pool = WorkerPool(plan.worker_specs(self._block, game_factory),
                                raw_pipes=plan.raw_pipes, on_failure=self._shutdown,
                                timeout=plan.timeout,
                                progress=self._block.progress if plan.relayed else None)
        self._pool.set_on_fork(self._forked)
        self._finalizer = self._pool.finalize(self, _release, self._pool.conns,
                                              self._pool.processes, self._block)
        try:
            num_actions = self._pool.start(context)
        except BaseException:
            self._finalizer()
            raise
        # Every worker has mapped the block: drop its name so that nothing can leak.
        self._block.unlink()

        self.single_observation_space = spaces.Box(0, 255, plan.options.obs_shape, np.uint8)
        self.single_action_space = spaces.Discrete(num_actions)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._num_actions = num_actions
        # Everything the hot path reuses, allocated once.
        self._outputs = StepOutputs(self._block, plan.same_step, self.copy)
        self._all_envs = AllEnvs(self._pool, plan.env_ranges, self._outputs, plan.relayed)
        self._batcher = AsyncBatcher(self._pool, plan.env_ranges, self._all_envs.frames,
                                     self._all_envs.reply_views, plan.batch_size, num_actions,
                                     plan.game)
        self._closed_reason = None

    # ----------------------------------------------------------------- hot path
    def _check_open(self) -> None:
        if self._closed_reason is not None:
            self._raise_closed()

    def _raise_closed(self) -> None:
        self._pool.check_process("this ShmVectorEnv")  # ForkedEnvError in a forked child
        raise ClosedError(f"this ShmVectorEnv is closed ({self._closed_reason}); "
                          "create a new one with shmenv.make(...)")

    def step(self, actions: Any, env_ids: Any = None) -> StepOutput:
        """Step every env once. See the class docstring for what ``obs`` is.

        With ``env_ids`` (async mode, envpool's convention) this is ``send(actions, env_ids)``
        then ``recv()``: it returns the next ready batch, which need not be those envs.
        """
        if env_ids is not None:
            self.send(actions, env_ids)
            return self.recv()
        self._check_open()
        actions = check_actions(actions, self.num_envs, self._num_actions, self.game)
        self._batcher.check_idle("step(actions)")
        self._pool.resynchronize()
        return self._all_envs.step(actions)

    # ----------------------------------------------------------------- reset
    def reset(
        self,
        *,
        seed: int | Sequence[int] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode in every env.

        ``seed=s`` reseeds env i with ``s + i`` (a sequence gives each env its own seed);
        reseeding reloads the ROM (~0.2 s per env), so do it once, not every episode.

        In async mode (``batch_size < num_envs``) this follows envpool: every env is reset,
        and ``(obs, infos)`` of the first ``batch_size`` ready ones are returned, with
        ``infos["env_id"]``; the rest come out of the next ``recv()`` calls.
        """
        self._check_open()
        if options:
            raise ValueError(f"ShmVectorEnv.reset takes no options, got {sorted(options)}")
        self._batcher.check_no_pending("reset()")
        if self.batch_size < self.num_envs:  # async mode: envpool's reset (shmenv.batching)
            self.async_reset(seed=seed)
            obs, _rewards, _terminations, _truncations, infos = self.recv()
            return obs, infos
        self._batcher.drop_in_flight()
        self._send_reset(seed)
        return self._all_envs.read_reset(self._pool.timeout)

    def _send_reset(self, seed: int | Sequence[int] | None) -> None:
        """Send every worker a reset (or a reseed and its seeds)."""
        seeds = None if seed is None else env_seeds(seed, self.num_envs)
        self._all_envs.send_reset(seeds)
        if seeds is not None:
            self._seeds = seeds

    # ----------------------------------------------------------------- read-only facts
    @property
    def worker_cpus(self) -> tuple[int | None, ...]:
        """The core each worker is pinned to (None: unpinned)."""
        return tuple(self._plan.worker_cpus)

    @property
    def relayed(self) -> bool:
        """Whether a synchronous step goes through the relay tree (one write, one read)."""
        return self._plan.relayed

    @property
    def raw_pipes(self) -> bool:
        """Whether the main uses raw pipe I/O (else ``Connection`` calls)."""
        return self._pool.raw_pipes

    @property
    def seeds(self) -> tuple[int | None, ...]:
        """Each env's current seed (None: unseeded), as last set by make() or reset(seed)."""
        return tuple(self._seeds)

    @property
    def batcher(self) -> AsyncBatcher:
        """The async-batch state (which workers are in flight, oldest first)."""
        return self._batcher

    @property
    def envs_in_flight(self) -> int:
        """Envs sent a step (or reset) whose results ``recv()`` has not returned yet."""
        return self._batcher.envs_in_flight

    @property
    def timeout(self) -> float | None:
        """The longest a call waits for a worker's reply, in seconds (None: no limit)."""
        return self._pool.timeout

    # ----------------------------------------------------------------- lifecycle
    def __reduce_ex__(self, protocol: Any) -> Any:
        """Refuse to pickle: the env's worker processes, pipes and shared memory exist only
        in this process, so a copy elsewhere could not work."""
        raise TypeError(
            "a ShmVectorEnv cannot be pickled: it owns worker processes and shared memory "
            "that belong to this process. Send the other process the arguments of "
            "shmenv.make(...) (or a function that calls it) and create the env there; to "
            "run envs on other machines, use shmenv.ray.make(...).")

    def __repr__(self) -> str:
        return (f"ShmVectorEnv({self.game!r}, num_envs={self.num_envs}, "
                f"num_workers={self.num_workers})")


def _release(conns: list, processes: list, block: SharedBlock) -> None:
    """Stop workers and release the block. A module-level function so that
    ``weakref.finalize`` can run it at garbage collection and interpreter exit."""
    release(conns, processes)
    block.close()
