"""ShmVectorEnv: the gymnasium VectorEnv over a worker pool, observations in shared memory.

The main process's whole job per step: validate the actions, send the workers one small
message, read one small reply, and turn the replies into numpy arrays. Per-env work in the
main process is numpy over the batch, never a Python loop. Processes and pipes belong to
:class:`shmenv.pool.WorkerPool`, async batches to :class:`shmenv.batching.AsyncBatcher`.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from shmenv.actions import check_actions
from shmenv.affinity import worker_cpus
from shmenv.batching import AsyncBatcher, BatchState, CommandFrames
from shmenv.block import BlockLayout, SharedBlock
from shmenv.errors import ClosedError
from shmenv.game import GameFactory
from shmenv.games import GameOptions, resolve_game
from shmenv.lifecycle import ClosableEnvMixin
from shmenv.outputs import StepOutput, StepOutputs
from shmenv.planning import (
    DEFAULT_RELAY_FANOUT,
    check_autoreset_mode,
    check_batch_size,
    check_num_envs,
    check_relay_fanout,
    check_timeout,
    env_seeds,
    plan_workers,
    relay_tree,
    spin_budget,
    split_envs,
    subtree_stops,
)
from shmenv.pool import WorkerPool, release
from shmenv.protocol import OP_RESEED, OP_RESET, OP_STEP, RELAY, REPLY_DTYPE
from shmenv.wire import RAW_PIPES, header_as_int32
from shmenv.worker import WorkerSpec


class ShmVectorEnv(ClosableEnvMixin, VectorEnv):
    """Many Atari games in worker processes, observations in one shared-memory block.

    Use :func:`shmenv.make` to build one. ``reset``/``step`` follow gymnasium's VectorEnv
    API. With ``copy=False`` (the default) the returned ``obs`` is a view of the shared
    block: it is valid until the next ``step``/``reset`` call, which overwrites it in
    place. Copy it (or pass ``copy=True``) to keep it longer. Rewards, flags and infos are
    always fresh arrays.

    Infos: ``"lives"`` every step; when an episode ends, ``"episode"`` with ``"r"``,
    ``"l"``, ``"t"`` and the ``"_episode"`` mask, exactly as gymnasium's
    ``RecordEpisodeStatistics`` reports them; under ``SAME_STEP`` autoreset also
    ``"final_obs"`` (an object array holding the ended episode's last stack for each env
    that finished, None elsewhere) and ``"_final_obs"``.

    Advanced: ``context`` picks the multiprocessing start method ("fork", "spawn",
    "forkserver"; default: the platform's). ``game_factory(game, seed, options, stack_out)``
    replaces :class:`shmenv.atari.AtariGame` in the workers (it must be picklable and
    implement :class:`shmenv.game.Game`); benchmarks use it to run a zero-cost game
    (:mod:`shmenv.fakegames`).

    Async batches (``batch_size < num_envs``, envpool's API): ``send(actions, env_ids)`` and
    ``recv()``; see :mod:`shmenv.batching` and docs/scaling.md.

    ``worker_spin_us``: after replying, a worker polls for its next command for up to this
    long (and at most 10% of its step time, and only while commands do come that fast)
    before sleeping, because waking a sleeping process costs every synchronous step tens
    to hundreds of µs. Default: 500 when every worker can have a core of its own, else 0
    (never spin on an oversubscribed machine). 0 turns it off.

    ``raw_pipes`` (default True where the platform allows): the main reads and writes
    multiprocessing's pipe framing on the raw descriptors (one ``readv`` per reply, see
    :mod:`shmenv.wire`); False uses ``Connection`` calls instead, with the same results and
    no relay tree.

    ``relay_fanout`` (default 8): a synchronous ``step`` goes through a relay tree of the
    workers with up to this many children each: the main process writes one command to
    worker 0 and reads one reply for all envs, and workers pass slices down and replies up
    (:class:`shmenv.worker.Relay`). This makes the main's cost per step nearly independent
    of the number of workers. 0: the main writes to and reads from every worker itself.
    Async batches always address workers one by one.

    ``cpu_affinity=True`` pins worker i to the i-th core this process may use (round-robin);
    a list of core ids pins them round-robin over that list. Where the platform has no
    ``os.sched_setaffinity`` a ``RuntimeWarning`` is issued and the workers run unpinned.

    ``timeout`` (seconds; default None: wait as long as it takes, as gymnasium does): the
    longest any call waits for a worker's reply after start-up (which has its own 120 s).
    A worker that does not answer in time (stopped, deadlocked, swapped out) makes the call
    raise :class:`shmenv.WorkerTimeoutError` naming it, its pid and envs; it is killed and
    the env closed. Only with a timeout does a wait ``poll`` the pipe before reading.

    gymnasium's async pair is here too: ``step_async(actions)`` / ``step_wait(timeout)``
    and ``reset_async(seed, options)`` / ``reset_wait(timeout)``, with its
    ``AlreadyPendingCallError`` and ``NoAsyncCallError``.

    An env belongs to the process that created it: used from a forked child it raises
    :class:`shmenv.ForkedEnvError`, and the child's exit leaves the parent's workers
    alone (see docs/reliability.md). It cannot be pickled: create it where it is used
    (give the other process the arguments of :func:`shmenv.make`).
    """

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

        options = GameOptions.from_kwargs(game_options)
        rom = resolve_game(game)
        num_envs = check_num_envs(num_envs)
        batch_size = check_batch_size(batch_size, num_envs)
        num_workers = plan_workers(num_envs, batch_size, num_workers,
                                   multiprocessing.cpu_count())
        autoreset_mode = check_autoreset_mode(autoreset_mode)
        relay_fanout = check_relay_fanout(relay_fanout)
        timeout = check_timeout(timeout)

        self.game = rom
        self.options = options
        self.num_envs = num_envs
        self.num_workers = int(num_workers)
        self.copy = copy
        self.metadata = {"autoreset_mode": autoreset_mode}
        self.batch_size = batch_size
        self._same_step = autoreset_mode == AutoresetMode.SAME_STEP
        self._seeds = env_seeds(seed, num_envs)
        self._env_ranges = split_envs(num_envs, self.num_workers)
        self._worker_cpus = worker_cpus(cpu_affinity, self.num_workers)
        raw_pipes = bool(raw_pipes) and RAW_PIPES
        # Relayed steps need raw pipe I/O and only serve synchronous steps of 2+ workers.
        self._relay = (raw_pipes and relay_fanout > 0 and batch_size == num_envs
                       and self.num_workers > 1)
        children = (relay_tree(self.num_workers, relay_fanout) if self._relay
                    else [[] for _ in range(self.num_workers)])
        spin_us = spin_budget(worker_spin_us, self.num_workers)

        # Relayed steps count their progress in the block, to name a hung worker.
        self._block = SharedBlock.create(BlockLayout(
            num_envs, options.obs_shape, self.num_workers if self._relay else 0))
        specs = _worker_specs(
            self._block, self._env_ranges, self._seeds, self._worker_cpus, children,
            game=rom, options=options, same_step_autoreset=self._same_step,
            write_final_obs=self._same_step, game_factory=game_factory,
            spin_us=spin_us)
        self._pool = WorkerPool(specs, raw_pipes=raw_pipes, on_failure=self._shutdown,
                                timeout=timeout,
                                progress=self._block.progress if self._relay else None)
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

        self.single_observation_space = spaces.Box(0, 255, options.obs_shape, np.uint8)
        self.single_action_space = spaces.Discrete(num_actions)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._num_actions = num_actions
        self._init_buffers()
        self._batcher = AsyncBatcher(self._pool, self._env_ranges, self._frames,
                                     self._reply_views, batch_size, num_actions, rom)
        self._closed_reason = None

    # ----------------------------------------------------------------- start-up
    def _init_buffers(self) -> None:
        """Everything the hot path reuses, allocated once."""
        num_envs = self.num_envs
        self._frames = CommandFrames(self._env_ranges, header_as_int32)
        self._outputs = StepOutputs(self._block, self._same_step, self.copy)
        self._replies = self._outputs.replies
        replies_bytes = self._replies.data.cast("B")
        size = REPLY_DTYPE.itemsize
        self._reply_views = [replies_bytes[size * start: size * stop]
                             for start, stop in self._env_ranges]
        # A relayed step: one frame [pipe header, OP_STEP | RELAY, every env's action] to
        # worker 0, one reply covering every env back (see shmenv.worker.Relay).
        self._relay_command = np.zeros(2 + num_envs, dtype=np.int32)
        self._relay_command[:2] = header_as_int32(4 * (1 + num_envs)), OP_STEP | RELAY
        self._relay_actions = self._relay_command[2:]
        self._relay_frame = self._relay_command.data.cast("B")
        self._all_replies = replies_bytes

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
        if self._relay:  # one write, one read (see shmenv.worker.Relay)
            self._relay_actions[:] = actions
            self._pool.round_trip(self._relay_frame, self._all_replies)
        else:
            self._frames.commands[self._frames.action_slots] = actions
            self._send_all(OP_STEP)
            self._pool.read_from_all(self._reply_views, when="in a step")
        return self._outputs.results()

    # ----------------------------------------------------------------- gymnasium's pair
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
        if self._relay:
            self._relay_actions[:] = actions
            self._pool.send_relayed(self._relay_frame)
        else:
            self._frames.commands[self._frames.action_slots] = actions
            self._send_all(OP_STEP)
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
        limit = self._pool.timeout if timeout is None else timeout
        if self._relay:
            self._pool.read_relayed(self._all_replies, limit)
        else:
            self._pool.read_from_all(self._reply_views, limit, "in a step")
        return self._outputs.results()

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
        return self._read_reset(self._pool.timeout if timeout is None else timeout)

    def _send_all(self, opcode: int) -> None:
        """Send every worker its prepared frame with ``opcode``: one write per worker."""
        self._frames.commands[self._frames.opcode_slots] = opcode
        self._pool.send_to_all(self._frames.frames)

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
        return self._read_reset(self._pool.timeout)

    def _send_reset(self, seed: int | Sequence[int] | None) -> None:
        """Send every worker a reset (or a reseed and its seeds)."""
        seeds = None if seed is None else env_seeds(seed, self.num_envs)
        self._pool.resynchronize()
        self._send_all(OP_RESET if seeds is None else OP_RESEED)
        if seeds is not None:
            for index, (start, stop) in enumerate(self._env_ranges):
                self._pool.send_object(index, seeds[start:stop])
            self._seeds = seeds

    def _read_reset(self, timeout: float | None) -> tuple[np.ndarray, dict[str, Any]]:
        self._pool.read_from_all(self._reply_views, timeout, "in a reset")
        obs = self._block.obs.copy() if self.copy else self._block.obs
        return obs, {"lives": self._replies["lives"].copy(),
                     "_lives": np.ones(self.num_envs, dtype=bool)}

    # ----------------------------------------------------------------- async batches
    def send(self, actions: Any, env_ids: Any = None) -> None:
        """Start one step of the envs ``env_ids`` (all envs if None) with ``actions``.

        ``actions[j]`` is for env ``env_ids[j]``. The ids must make up whole workers and none
        may be in flight; passing back exactly the ``infos["env_id"]`` of a ``recv()`` always
        does. Returns at once; collect the results with :meth:`recv`.
        """
        self._check_open()
        self._batcher.send(actions, env_ids)

    def recv(self) -> StepOutput:
        """Wait for the first ``batch_size`` envs whose step (or reset) is done.

        Returns ``(obs, rewards, terminations, truncations, infos)`` for those envs, sorted by
        env id; ``infos["env_id"]`` says which they are. See :mod:`shmenv.batching` for when
        ``obs`` is a view and when it is gathered.
        """
        self._check_open()
        envs, env_ids = self._batcher.recv()
        obs, rewards, terminations, truncations, infos = self._outputs.results(envs)
        infos["env_id"] = env_ids
        return obs, rewards, terminations, truncations, infos

    def async_reset(self, *, seed: int | Sequence[int] | None = None) -> None:
        """Reset every env without waiting; the reset envs come out of :meth:`recv`.

        Results still in flight are dropped. ``seed`` works as in ``reset``.
        """
        self._check_open()
        seeds = None if seed is None else env_seeds(seed, self.num_envs)
        self._batcher.send_all(OP_RESET if seeds is None else OP_RESEED, seeds)
        if seeds is not None:
            self._seeds = seeds

    # ----------------------------------------------------------------- read-only facts
    @property
    def worker_pids(self) -> tuple[int, ...]:
        """The worker processes' pids, in worker order (they stay listed after close)."""
        return tuple(int(process.pid or 0) for process in self._pool.processes)

    @property
    def worker_env_ranges(self) -> tuple[tuple[int, int], ...]:
        """Each worker's envs as ``(start, stop)``, in worker order."""
        return tuple(self._env_ranges)

    @property
    def worker_cpus(self) -> tuple[int | None, ...]:
        """The core each worker is pinned to (None: unpinned)."""
        return tuple(self._worker_cpus)

    @property
    def relayed(self) -> bool:
        """Whether a synchronous step goes through the relay tree (one write, one read)."""
        return self._relay

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
    def _before_release(self, reason: str) -> None:
        self._pool.closing = reason  # a call waiting in another thread: ClosedError

    def _forked(self) -> None:
        """In a forked child (see WorkerPool.forked_away): refuse every call."""
        self._closed_reason = "it belongs to another process"

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


def _worker_specs(block: SharedBlock, ranges: list[tuple[int, int]],
                  seeds: list[int | None], cpus: list[int | None],
                  children: list[list[int]], **common: Any) -> list[WorkerSpec]:
    """Each worker's start-up spec: its envs, their seeds, its core and relay children;
    ``common``: the WorkerSpec fields every worker shares."""
    stops = subtree_stops(ranges, children)
    return [WorkerSpec(
        index=index, block_name=block.name, layout=block.layout, env_start=start,
        env_stop=stop, seeds=tuple(seeds[start:stop]), cpu=cpus[index],
        relay_children=tuple((child, ranges[child][0], stops[child])
                             for child in children[index]),
        **common,
    ) for index, (start, stop) in enumerate(ranges)]


def _release(conns: list, processes: list, block: SharedBlock) -> None:
    """Stop workers and release the block. A module-level function so that
    ``weakref.finalize`` can run it at garbage collection and interpreter exit."""
    release(conns, processes)
    block.close()
