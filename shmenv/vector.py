"""ShmVectorEnv: a gymnasium VectorEnv whose observations never leave shared memory.

The main process's whole job per step: validate the actions, send each worker one small
message, read one small reply from each, and turn the replies into numpy arrays. Per-env
work in the main process is numpy over the batch, never a Python loop.
"""

from __future__ import annotations

import multiprocessing
import time
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from shmenv.affinity import worker_cpus
from shmenv.batching import ALL_ENVS, AsyncBatchingMixin
from shmenv.block import BlockLayout, SharedBlock
from shmenv.errors import ClosedError, WorkerDiedError, WorkerError, describe_exit
from shmenv.games import GameOptions, resolve_game
from shmenv.lifecycle import ClosableEnvMixin
from shmenv.planning import (
    DEFAULT_RELAY_FANOUT,
    check_batch_size,
    env_seeds,
    plan_async_workers,
    relay_tree,
    spin_budget,
    split_envs,
    subtree_stops,
)
from shmenv.pool import resynchronize, sigint_blocked, stop_workers
from shmenv.protocol import OP_RESEED, OP_RESET, OP_STEP, RELAY, REPLY_DTYPE, ErrorReport
from shmenv.wire import RAW_PIPES, header_as_int32, read_frame_into, write_frame
from shmenv.worker import WorkerSpec, run_worker

STARTUP_TIMEOUT_S = 120.0
RESYNC_TIMEOUT_S = 60.0  # a worker may be in the middle of a reseed (~0.2 s per env)
_SHUTDOWN_TIMEOUT_S = 2.0
_FAILURE_GRACE_S = 0.5  # after a worker failed, the others get this long before SIGKILL


class ShmVectorEnv(ClosableEnvMixin, AsyncBatchingMixin, VectorEnv):
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
    replaces :class:`shmenv.atari.AtariGame` in the workers (it must be picklable and offer
    the same ``step``/``reset``/``reseed``/``write_final_stack`` interface); benchmarks use
    it to run a zero-cost game.

    Async batches (``batch_size < num_envs``, envpool's API): ``send(actions, env_ids)`` and
    ``recv()``; see :class:`shmenv.batching.AsyncBatchingMixin` and docs/scaling.md.

    ``worker_spin_us``: after replying, a worker polls for its next command for up to this
    long (and at most 10% of its step time, and only while commands do come that fast)
    before sleeping, because waking a sleeping process costs every synchronous step tens
    to hundreds of µs. Default: 500 when every worker can have a core of its own, else 0
    (never spin on an oversubscribed machine). 0 turns it off.

    ``relay_fanout`` (default 8): a synchronous ``step`` goes through a relay tree of the
    workers with up to this many children each: the main process writes one command to
    worker 0 and reads one reply for all envs, and workers pass slices down and replies up
    (:class:`shmenv.worker.Relay`). This makes the main's cost per step nearly independent
    of the number of workers. 0: the main writes to and reads from every worker itself.
    Async batches always address workers one by one.

    ``cpu_affinity=True`` pins worker i to the i-th core this process may use (round-robin);
    a list of core ids pins them round-robin over that list. Where the platform has no
    ``os.sched_setaffinity`` a ``RuntimeWarning`` is issued and the workers run unpinned.
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
        game_factory: Callable[..., Any] | None = None,
        batch_size: int | None = None,
        cpu_affinity: bool | Sequence[int] = False,
        worker_spin_us: float | None = None,
        relay_fanout: int = DEFAULT_RELAY_FANOUT,
        **game_options: Any,
    ) -> None:
        self._closed_reason: str | None = "it was never fully started"
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._conns: list[Connection] = []
        self._block: SharedBlock | None = None

        options = GameOptions.from_kwargs(game_options)
        rom = resolve_game(game)
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        num_envs = int(num_envs)
        cores = multiprocessing.cpu_count()
        batch_size = check_batch_size(batch_size, num_envs)
        if batch_size < num_envs:  # async: whole workers per batch (see shmenv.batching)
            num_workers = plan_async_workers(num_envs, batch_size, num_workers, cores)
        if num_workers is None:
            num_workers = min(num_envs, cores)
        if not isinstance(num_workers, (int, np.integer)) or not 1 <= num_workers <= num_envs:
            raise ValueError(f"num_workers must be an int in [1, num_envs={num_envs}], "
                             f"got {num_workers!r}")
        autoreset_mode = AutoresetMode(autoreset_mode)
        if autoreset_mode == AutoresetMode.DISABLED:
            raise ValueError("autoreset_mode DISABLED is not supported; use SAME_STEP "
                             "(the seed's behaviour) or NEXT_STEP")

        self.game = rom
        self.options = options
        self.num_envs = num_envs
        self.num_workers = int(num_workers)
        self.copy = copy
        self.metadata = {"autoreset_mode": autoreset_mode}
        self._same_step = autoreset_mode == AutoresetMode.SAME_STEP
        self._seeds = env_seeds(seed, num_envs)
        self._game_factory = game_factory
        self._env_ranges = split_envs(num_envs, self.num_workers)
        self.batch_size = batch_size
        self._worker_cpus = worker_cpus(cpu_affinity, self.num_workers)
        self._worker_spin_us = spin_budget(worker_spin_us, self.num_workers)
        if (isinstance(relay_fanout, bool) or not isinstance(relay_fanout, (int, np.integer))
                or relay_fanout < 0):
            raise ValueError(f"relay_fanout must be an int >= 0, got {relay_fanout!r}")
        # Relayed steps need raw pipe I/O and only serve synchronous steps of 2+ workers.
        self._relay = (RAW_PIPES and relay_fanout > 0 and batch_size == num_envs
                       and self.num_workers > 1)
        self._relay_children = (relay_tree(self.num_workers, int(relay_fanout)) if self._relay
                                else [[] for _ in range(self.num_workers)])

        self._block = SharedBlock.create(BlockLayout(num_envs, options.obs_shape))
        self._finalizer = weakref.finalize(self, _shutdown, self._conns, self._processes,
                                           self._block)
        try:
            num_actions = self._start_workers(context)
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
        self._closed_reason = None

    # ----------------------------------------------------------------- start-up
    def _start_workers(self, context: str | None) -> int:
        ctx = multiprocessing.get_context(context)
        # All pipes first: a worker gets the main's ends of its relay children's pipes.
        pipes = [ctx.Pipe() for _ in self._env_ranges]
        self._conns.extend(parent_end for parent_end, _child_end in pipes)
        try:
            self._start_processes(ctx, pipes)
        finally:
            for _parent_end, child_end in pipes:
                child_end.close()
        return self._wait_until_ready()

    def _start_processes(self, ctx: Any, pipes: list[tuple[Connection, Connection]]) -> None:
        forked = ctx.get_start_method() == "fork"
        stops = subtree_stops(self._env_ranges, self._relay_children)
        for index, (start, stop) in enumerate(self._env_ranges):
            children = self._relay_children[index]
            spec = WorkerSpec(
                index=index, block_name=self._block.name, layout=self._block.layout,
                env_start=start, env_stop=stop, game=self.game,
                seeds=tuple(self._seeds[start:stop]), options=self.options,
                same_step_autoreset=self._same_step, write_final_obs=self._same_step,
                game_factory=self._game_factory, cpu=self._worker_cpus[index],
                spin_us=self._worker_spin_us,
                relay_children=tuple((child, self._env_ranges[child][0], stops[child])
                                     for child in children),
            )
            child_end = pipes[index][1]
            child_conns = tuple(self._conns[child] for child in children)
            # A forked child inherits every descriptor open here; it keeps only its own end
            # and its relay children's, so that each pipe's EOF still means one worker died.
            keep = {child_end.fileno()} | {conn.fileno() for conn in child_conns}
            inherited = tuple(conn.fileno() for pipe in pipes for conn in pipe
                              if not conn.closed and conn.fileno() not in keep)
            process = ctx.Process(
                target=run_worker,
                args=(child_end, spec, inherited if forked else (), child_conns),
                name=f"shmenv-worker-{index}", daemon=True,
            )
            with sigint_blocked():  # a Ctrl-C now must not reach a half-started worker
                process.start()
            child_end.close()
            self._processes.append(process)

    def _wait_until_ready(self) -> int:
        num_actions = None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        for index, (conn, process) in enumerate(zip(self._conns, self._processes)):
            if not conn.poll(max(deadline - time.monotonic(), 0)):
                raise WorkerDiedError(f"worker {index} did not start within "
                                      f"{STARTUP_TIMEOUT_S:.0f} s")
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                how, code = describe_exit(process)
                raise WorkerDiedError(f"{self._describe_worker(index)} {how} while starting",
                                      code) from None
            if kind == "error":
                raise WorkerError(f"{self._describe_worker(index)} failed to start: "
                                  f"{payload.type_name}: {payload.message}\n\n"
                                  f"Worker traceback:\n{payload.traceback}",
                                  payload.type_name, payload.traceback)
            num_actions = payload
        return num_actions

    def _init_buffers(self) -> None:
        """Everything the hot path reuses, allocated once."""
        num_envs, num_workers = self.num_envs, self.num_workers
        # One int32 command buffer; worker w's frame is [pipe header, opcode, its actions...]
        # (the header is multiprocessing's length prefix, so each frame is one write).
        self._commands = np.zeros(num_envs + 2 * num_workers, dtype=np.int32)
        self._opcode_slots = np.array([start + 2 * w + 1 for w, (start, _) in
                                       enumerate(self._env_ranges)])
        self._action_slots = np.concatenate(
            [np.arange(start, stop) + 2 * w + 2
             for w, (start, stop) in enumerate(self._env_ranges)]
        )
        commands_bytes = memoryview(self._commands).cast("B")
        self._command_frames = []
        for w, (start, stop) in enumerate(self._env_ranges):
            self._commands[start + 2 * w] = header_as_int32(4 * (1 + stop - start))
            self._command_frames.append(commands_bytes[4 * (start + 2 * w): 4 * (stop + 2 * w + 2)])
        self._command_views = [frame[4:] for frame in self._command_frames]  # payload only
        self._fds = [conn.fileno() for conn in self._conns]
        self._reply_header = bytearray(4)
        # Replies land straight in one record array, worker by worker.
        self._replies = np.zeros(num_envs, dtype=REPLY_DTYPE)
        replies_bytes = memoryview(self._replies).cast("B")
        size = REPLY_DTYPE.itemsize
        self._reply_views = [replies_bytes[size * start: size * stop]
                             for start, stop in self._env_ranges]
        # A relayed step: one frame [pipe header, OP_STEP | RELAY, every env's action] to
        # worker 0, one reply covering every env back (see shmenv.worker.Relay).
        self._relay_command = np.zeros(2 + num_envs, dtype=np.int32)
        self._relay_command[:2] = header_as_int32(4 * (1 + num_envs)), OP_STEP | RELAY
        self._relay_actions = self._relay_command[2:]
        self._relay_frame = memoryview(self._relay_command).cast("B")
        self._all_replies = replies_bytes
        self._pending: list[int] = []
        self._unread_replies = False  # commands sent, replies not all read yet; see _drain
        self._env_ids = np.arange(num_envs)
        # Column views of the records, made once: _results copies them.
        self._columns = {name: self._replies[name] for name in REPLY_DTYPE.names}
        for flag in ("terminated", "truncated", "done"):
            self._columns[flag] = self._columns[flag].view(bool)
        # Outputs are built by copying: after the emulators ran, the main runs with cold
        # caches, and numpy's copy path (warm after the first column) costs a fraction of
        # a first ufunc, reduction, np.ones or fancy index (~20 us each here, measured).
        self._all_true = np.ones(num_envs, dtype=bool)
        self._all_none = np.full(num_envs, None, dtype=object)
        self._init_async_state()

    def _describe_worker(self, index: int) -> str:
        start, stop = self._env_ranges[index]
        envs = f"env {start}" if stop - start == 1 else f"envs {start}-{stop - 1}"
        pid = self._processes[index].pid if index < len(self._processes) else None
        return f"shmenv worker {index} (pid {pid}, {envs})"

    # ----------------------------------------------------------------- hot path
    def _check_open(self) -> None:
        if self._closed_reason is not None:
            raise ClosedError(f"this ShmVectorEnv is closed ({self._closed_reason}); "
                              "create a new one with shmenv.make(...)")

    def _send(self, opcode: int) -> None:
        self._commands[self._opcode_slots] = opcode
        # Set before the first byte goes out and cleared only once every reply was read:
        # if an exception (Ctrl-C) lands anywhere in between, the next call sees it set.
        self._unread_replies = True
        self._send_frames(range(self.num_workers))
        self._pending = list(range(self.num_workers))

    def _send_frames(self, workers: Sequence[int]) -> None:
        """Send each listed worker its prepared command frame: one write per worker."""
        for index in workers:
            try:
                if RAW_PIPES:
                    write_frame(self._fds[index], self._command_frames[index])
                else:
                    self._conns[index].send_bytes(self._command_views[index])
            except OSError:
                self._worker_died(index)

    def _worker_died(self, index: int) -> None:
        how, code = describe_exit(self._processes[index])
        self._pending.clear()
        self._fail(WorkerDiedError(
            f"{self._describe_worker(index)} {how}. All workers were stopped and this env "
            "is closed; create a new one.", code))

    def _gather(self) -> None:
        """Read every worker's reply into ``self._replies``, in worker order.

        Blocking reads sleep in the kernel; a dead worker is seen at once as EOF, because
        only that worker holds the other end of its pipe.
        """
        while self._pending:
            index = self._pending[0]
            view = self._reply_views[index]
            try:
                if RAW_PIPES:  # one readv into the record array (see shmenv.wire)
                    error_reply = read_frame_into(self._fds[index], self._reply_header, view)
                else:
                    nbytes = self._conns[index].recv_bytes_into(view)
                    error_reply = None if nbytes == len(view) else bytes(view[:nbytes])
            except multiprocessing.BufferTooShort as exc:
                error_reply = exc.args[0]
            except (EOFError, OSError):
                self._worker_died(index)
            self._pending.pop(0)
            if error_reply is not None:
                self._raise_worker_error(index, error_reply)
        self._unread_replies = False

    def _raise_worker_error(self, index: int, payload: bytes) -> None:
        report = ErrorReport.decode(payload)
        if report is None:
            self._fail(WorkerError(f"{self._describe_worker(index)} sent a malformed reply"))
        origin = report.worker  # relayed: another worker than `index`
        if report.kind == "died":
            self._worker_died(origin)
        self._fail(WorkerError(f"{self._describe_worker(origin)} raised {report.type_name}: "
                               f"{report.message}\n\nWorker traceback:\n{report.traceback}",
                               report.type_name, report.traceback))

    def _fail(self, error: Exception) -> None:
        """Stop everything, then raise: the envs' state is lost with the failed worker, so
        the others get a short grace period and are then killed (no polite 2 s wait)."""
        self._pending.clear()
        stop_workers(self._conns, self._processes, _FAILURE_GRACE_S)
        self._shutdown(f"a worker failed: {error}".splitlines()[0])
        raise error

    def _drain(self) -> None:
        """Make the pipes clean before a new command.

        After an interrupted call (Ctrl-C inside ``step``), each worker still finishes the
        command it got, and its reply (or the rest of one) may sit unread in the pipe, or
        a command may never have been sent. Resynchronizing discards what is unread, so the
        next call reads its own replies.
        """
        if self._unread_replies:
            self._pending.clear()
            for index, conn in enumerate(self._conns):
                try:
                    resynchronize(conn, RESYNC_TIMEOUT_S)
                except (EOFError, OSError):
                    self._worker_died(index)
                except TimeoutError:
                    self._fail(WorkerDiedError(
                        f"{self._describe_worker(index)} did not answer within "
                        f"{RESYNC_TIMEOUT_S:.0f} s after an interrupted call; all workers "
                        "were stopped and this env is closed."))
            self._unread_replies = False

    def _validate_actions(self, actions: Any) -> np.ndarray:
        """The actions as an integer array, or a ValueError/TypeError naming the first bad
        env and its value. Nothing has been sent when this raises."""
        if actions is None or isinstance(actions, (str, bytes)):
            raise TypeError(f"actions must be a sequence of {self.num_envs} ints (one per "
                            f"env), got {actions!r}")
        try:
            array = np.asarray(actions)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"actions must be a flat sequence of {self.num_envs} ints (one "
                             f"per env); could not read {actions!r} as one: {exc}") from None
        if array.shape != (self.num_envs,):
            what = (f"{array.shape[0]} actions" if array.ndim == 1
                    else f"an array of shape {array.shape}")
            raise ValueError(f"actions must have shape ({self.num_envs},), one int per env; "
                             f"got {what}")
        if array.dtype.kind not in "iu":
            array = _integer_actions(array)
        # argmin/argmax, not min/max: a plain loop instead of numpy's ufunc reduction
        # machinery, which costs ~20 µs on the main's cold caches (see _init_buffers).
        if array[array.argmin()] < 0 or array[array.argmax()] >= self._num_actions:
            index = int(np.flatnonzero((array < 0) | (array >= self._num_actions))[0])
            raise ValueError(f"actions[{index}] = {array[index].item()!r} is out of range: "
                             f"{self.game} has actions 0..{self._num_actions - 1}")
        return array

    def step(self, actions: Any, env_ids: Any = None) -> tuple[
            np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every env once. See the class docstring for what ``obs`` is.

        With ``env_ids`` (async mode, envpool's convention) this is ``send(actions, env_ids)``
        then ``recv()``: it returns the next ready batch, which need not be those envs.
        """
        if env_ids is not None:
            self.send(actions, env_ids)
            return self.recv()
        self._check_open()
        actions = self._validate_actions(actions)
        self._check_idle("step(actions)")
        self._drain()
        if self._relay:
            self._relayed_step(actions)
        else:
            self._commands[self._action_slots] = actions
            self._send(OP_STEP)
            self._gather()
        return self._results()

    def _relayed_step(self, actions: np.ndarray) -> None:
        """One synchronous step through the relay tree: one write, one read (see
        :class:`shmenv.worker.Relay`)."""
        self._relay_actions[:] = actions
        self._unread_replies = True
        try:
            write_frame(self._fds[0], self._relay_frame)
            error_reply = read_frame_into(self._fds[0], self._reply_header, self._all_replies)
        except (EOFError, OSError):
            self._worker_died(0)
        if error_reply is not None:
            self._raise_worker_error(0, error_reply)
        self._unread_replies = False

    def _results(self, envs: slice | np.ndarray = ALL_ENVS) -> tuple[
            np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Outputs for the envs ``envs`` selects (all of them for ``step``), from their
        latest replies: a copy of each reply column, and a Python loop only over the envs
        whose episode just ended (their ``final_obs``). The workers already zero the
        episode columns of envs that did not end and send ``done``, so every output is a
        copy (see ``_init_buffers`` for why that matters)."""
        if envs is ALL_ENVS:  # the synchronous step: no slicing, the ids are positions
            columns = self._columns
        else:
            columns = {name: column[envs] for name, column in self._columns.items()}
        rewards = columns["reward"].copy()
        terminations = columns["terminated"].copy()
        truncations = columns["truncated"].copy()
        dones = columns["done"].copy()
        count = len(rewards)
        infos: dict[str, Any] = {"lives": columns["lives"].copy(),
                                 "_lives": self._all_true[:count].copy()}
        if np.count_nonzero(dones):
            infos["episode"] = {"r": columns["episode_return"].copy(),
                                "l": columns["episode_length"].copy(),
                                "t": columns["episode_time"].copy()}
            infos["_episode"] = dones
            if self._same_step:
                final_obs = self._all_none[:count].copy()
                batch_ids = self._env_ids if envs is ALL_ENVS else self._env_ids[envs]
                rows = self._block.final_obs
                for position in dones.nonzero()[0].tolist():
                    final_obs[position] = rows[batch_ids[position]].copy()
                infos["final_obs"] = final_obs
                infos["_final_obs"] = dones.copy()
        return self._obs_for(envs), rewards, terminations, truncations, infos

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
        if self.batch_size < self.num_envs:  # async mode: envpool's reset (shmenv.batching)
            self.async_reset(seed=seed)
            obs, _rewards, _terminations, _truncations, infos = self.recv()
            return obs, infos
        seeds = None if seed is None else env_seeds(seed, self.num_envs)
        self._drop_in_flight()
        self._drain()
        if seeds is None:
            self._send(OP_RESET)
        else:
            self._send(OP_RESEED)
            for index, (start, stop) in enumerate(self._env_ranges):
                try:
                    self._conns[index].send(seeds[start:stop])
                except OSError:
                    self._worker_died(index)
            self._seeds = seeds
        self._gather()
        obs = self._block.obs.copy() if self.copy else self._block.obs
        return obs, {"lives": self._replies["lives"].copy(),
                     "_lives": np.ones(self.num_envs, dtype=bool)}

    def __repr__(self) -> str:
        return (f"ShmVectorEnv({self.game!r}, num_envs={self.num_envs}, "
                f"num_workers={self.num_workers})")


def _integer_actions(array: np.ndarray) -> np.ndarray:
    """Actions given with a non-integer dtype: an int64 copy if every entry is a Python or
    numpy int (an object array from a list of ints mixed with big ones), else a TypeError
    naming the first entry that is not (floats, even whole ones, NaN, None, strings, bools).
    """
    values = array.tolist()
    not_int = [i for i, v in enumerate(values)
               if isinstance(v, bool) or not isinstance(v, (int, np.integer))]
    if not_int:
        # Name a NaN or a fraction before a whole float such as 2.0.
        whole = [i for i in not_int if isinstance(values[i], float) and values[i].is_integer()]
        index = next((i for i in not_int if i not in whole), not_int[0])
        value = values[index]
        hint = " (cast with .astype(int) if you meant it)" if index in whole else ""
        raise TypeError(f"actions must be integers: actions[{index}] = {value!r} "
                        f"({type(value).__name__}, array dtype {array.dtype}){hint}")
    out_of_int64 = [i for i, v in enumerate(values) if not -2**63 <= v < 2**63]
    if out_of_int64:
        index = out_of_int64[0]
        raise ValueError(f"actions[{index}] = {values[index]!r} is out of range")
    return np.array(values, dtype=np.int64)


def _shutdown(conns: list[Connection], processes: list, block: SharedBlock) -> None:
    """Stop workers and release the block. A module-level function so that
    ``weakref.finalize`` can run it at garbage collection and interpreter exit."""
    stop_workers(conns, processes, _SHUTDOWN_TIMEOUT_S)
    for conn in conns:
        conn.close()
    block.close()
