"""Async batches, envpool-style: ``send(actions, env_ids)`` and ``recv()``.

Granularity. A worker owns a contiguous range of env slots and steps them all per command,
with one message in and one reply out. So the unit of asynchrony
is the worker: ``recv()`` returns the envs of whole workers, the first ones whose replies
are ready. To make every batch exactly ``batch_size`` envs, async mode splits the envs into
workers of equal size ``E`` with ``E`` dividing ``batch_size``; a batch is then
``batch_size / E`` workers. By default :func:`shmenv.planning.plan_async_workers` picks
the largest such ``E`` that still gives at least ``min(num_envs, cpu_count)`` workers:
large workers mean few messages (cheap for the main process), enough workers keep every core busy.

Fairness. Each send is numbered. When more workers are ready than a batch needs, the ones
sent longest ago win, so a ready env waits at most a bounded number of rounds and no env
starves. Waiting is a ``poll`` over the in-flight pipes: it sleeps in the kernel.

Observations. ``recv()`` sorts the chosen workers by index. When their env ranges are
adjacent, ``obs`` is a zero-copy view of the shared block (always the case when a batch is
one worker, as with the default plan for ``batch_size >= num_envs / cpu_count``);
otherwise it is one gather (``np.take``) into a buffer reused by every ``recv()``. Either
way it is valid until those envs are sent new actions or the next ``recv()``; pass
``copy=True`` to get arrays of your own.

``reset()`` follows envpool: it resets every env and returns ``(obs, infos)`` for the first
``batch_size`` that are ready (``infos["env_id"]``); the others are still in flight and come
out of the following ``recv()`` calls. ``async_reset()`` does the same without waiting.
Replies still in flight when a reset starts are dropped.

:class:`AsyncBatcher` holds the in-flight state; :class:`EnvpoolApiMixin` is the env's
``send``/``recv``/``async_reset`` over it.
"""

from __future__ import annotations

import enum
import math
import select
import time
from collections.abc import Sequence
from multiprocessing.connection import wait as wait_connections
from typing import Any

import numpy as np
from gymnasium.error import AlreadyPendingCallError, NoAsyncCallError

from shmenv.actions import check_actions
from shmenv.all_envs import CommandFrames
from shmenv.batch_envs import BatchEnvs
from shmenv.outputs import StepOutput, StepOutputs
from shmenv.planning import env_seeds
from shmenv.pool import WorkerPool
from shmenv.protocol import OP_RESEED, OP_RESET, OP_STEP


class BatchState(enum.Enum):
    """Where the async life cycle stands; :meth:`AsyncBatcher._move` is the only place that
    changes it."""

    IDLE = "idle"  # nothing in flight
    IN_FLIGHT = "in flight"  # some workers were sent a command recv() has not returned
    RECEIVING = "receiving"  # a recv() chose its batch and was interrupted reading it
    # gymnasium's async pair: every env was sent a step (or reset) by step_async (or
    # reset_async) and step_wait (reset_wait) has not read the replies yet. The values are
    # gymnasium's AsyncState names, used in its error messages.
    WAITING_STEP = "step"
    WAITING_RESET = "reset"


class AsyncBatcher:
    """The in-flight state of async batches and the rules that move it.

    It knows which workers were sent a command and when (for fairness), picks the workers a
    ``recv()`` returns, and reads their replies into ``reply_views``. Which envs those
    workers step is :class:`shmenv.batch_envs.BatchEnvs`'s (``envs``); turning replies into
    outputs is the env's (:class:`EnvpoolApiMixin`).
    """

    def __init__(self, pool: WorkerPool, ranges: Sequence[tuple[int, int]],
                 frames: CommandFrames, reply_views: Sequence[memoryview],
                 batch_size: int, num_actions: int, game: str) -> None:
        self._pool = pool
        self._ranges = list(ranges)
        self._frames = frames
        self._reply_views = reply_views
        self._num_actions = num_actions
        self._game = game
        num_workers = len(ranges)
        self.envs = BatchEnvs(ranges, frames.action_slots)
        self.num_envs = self.envs.num_envs
        self.batch_size = batch_size
        self._worker_sizes = sizes = self.envs.worker_sizes
        self._fd_worker = {fd: index for index, fd in enumerate(pool.fds)}
        self._batch_workers = (num_workers if batch_size == self.num_envs
                               else batch_size // int(sizes[0]))
        self.state = BatchState.IDLE
        self._send_seq = [-1] * num_workers  # -1: idle; else the number of its last send
        self._next_seq = 0
        self._workers_in_flight = 0
        self._chosen: list[int] = []  # workers picked by a recv(), oldest sends first
        self._unread: list[int] = []  # of those, the ones whose reply is not read yet
        self._poller = select.poll() if hasattr(select, "poll") else None
        self._waiting: BatchState | None = None  # a step_async/reset_async in flight

    def _move(self) -> None:
        """Set :attr:`state` from the bookkeeping, after every change to it."""
        if self._waiting is not None:
            self.state = self._waiting
        elif self._chosen:
            self.state = BatchState.RECEIVING
        elif self._workers_in_flight:
            self.state = BatchState.IN_FLIGHT
        else:
            self.state = BatchState.IDLE

    # ------------------------------------------------------------------ facts
    @property
    def envs_in_flight(self) -> int:
        """Envs sent a step (or reset) whose results recv() has not returned."""
        return int(sum(self._worker_sizes[w] for w, s in enumerate(self._send_seq) if s >= 0))

    @property
    def in_flight_workers(self) -> tuple[int, ...]:
        """The workers in flight, oldest send first."""
        busy = sorted((s, w) for w, s in enumerate(self._send_seq) if s >= 0)
        return tuple(w for _s, w in busy)

    def wait_until_replied(self) -> None:
        """Block until every in-flight worker's reply is readable, so that the batch the
        next ``recv()`` picks no longer depends on scheduling (oldest sends win)."""
        conns = self._pool.conns
        limit = self._pool.timeout
        deadline = None if limit is None else time.monotonic() + limit
        waiting = {conns[w] for w in self.in_flight_workers}
        while waiting:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            ready = wait_connections(list(waiting), left)
            if not ready and deadline is not None:
                self._pool.timed_out([w for w in self.in_flight_workers
                                      if conns[w] in waiting], limit, "in an async batch")
            waiting -= set(ready)

    def check_no_pending(self, what: str) -> None:
        """Raise gymnasium's ``AlreadyPendingCallError`` if a ``step_async`` or
        ``reset_async`` waits for its ``*_wait``."""
        if self.state in (BatchState.WAITING_STEP, BatchState.WAITING_RESET):
            raise AlreadyPendingCallError(
                f"Calling {what} while waiting for a pending call to "
                f"`{self.state.value}_async` to complete: call `{self.state.value}_wait()` "
                "first", self.state.value)

    def check_idle(self, what: str) -> None:
        self.check_no_pending(what)
        if self.state is not BatchState.IDLE:
            raise RuntimeError(
                f"{what} steps every env, but {self.envs_in_flight} envs are in flight "
                "from send() or an async-mode reset(): pass env_ids (step(actions, "
                "infos['env_id']) is send + recv, as in envpool), or recv() them all first"
            )

    # ------------------------------------------------------------------ gymnasium's pair
    def start_call(self, state: BatchState) -> None:
        """``step_async``/``reset_async`` sent every env a command (the caller checked
        that none was pending, :meth:`check_idle`); the matching ``*_wait`` reads it."""
        self._waiting = state
        self._move()

    def finish_call(self, state: BatchState) -> None:
        """``step_wait``/``reset_wait`` is about to read the replies of its ``*_async``.
        Cleared before reading: an interrupted wait loses the call (the next command
        resynchronizes the pipes), as an interrupted ``step()`` does."""
        if self.state is not state:
            verb = state.value
            raise NoAsyncCallError(f"Calling `{verb}_wait` without any prior call to "
                                   f"`{verb}_async`.", verb)
        self._waiting = None
        self._move()

    # ------------------------------------------------------------------ send
    def send(self, actions: Any, env_ids: Any) -> None:
        """Start a step of whole workers' envs (see ``ShmVectorEnv.send``)."""
        ids, workers, slots = self.envs.workers_of(env_ids)
        actions = check_actions(actions, len(ids), self._num_actions, self._game)
        busy = [w for w in workers if self._send_seq[w] >= 0]
        if busy:
            start, stop = self._ranges[busy[0]]
            raise ValueError(f"envs {start}-{stop - 1} are already in flight: recv() their "
                             "results before sending them new actions")
        self._pool.resynchronize()  # replies owed by an interrupted synchronous call
        commands = self._frames.commands
        commands[slots] = actions
        for index in workers:
            commands[self._frames.opcode_slots[index]] = OP_STEP
        self._send(workers)

    def send_all(self, opcode: int, seeds: list[int | None] | None) -> None:
        """Send every worker ``opcode`` (a reset or reseed) after dropping what is in
        flight; the results come out of :meth:`recv`."""
        self.drop_in_flight()
        self._pool.resynchronize()
        workers = list(range(len(self._ranges)))
        self._frames.commands[self._frames.opcode_slots] = opcode
        self._send(workers)
        if seeds is not None:
            for index, (start, stop) in enumerate(self._ranges):
                self._pool.send_object(index, seeds[start:stop])

    def _send(self, workers: Sequence[int]) -> None:
        poller = self._poller
        for index in workers:
            self._send_seq[index] = self._next_seq
            self._next_seq += 1
            if poller is not None:
                poller.register(self._pool.fds[index], select.POLLIN)
        self._workers_in_flight += len(workers)
        self._move()
        for index in workers:
            self._pool.send_frame(index, self._frames.frames[index])

    # ------------------------------------------------------------------ recv
    def recv(self) -> tuple[slice | np.ndarray, np.ndarray]:
        """Wait for the next batch and read its replies. Returns the envs as a selection of
        the reply rows (a slice for adjacent workers) and their ids (read-only)."""
        if self.state is not BatchState.RECEIVING:
            if self.state is BatchState.IDLE or self._workers_in_flight < self._batch_workers:
                raise RuntimeError(f"recv() returns {self.batch_size} envs but only "
                                   f"{self.envs_in_flight} are in flight: send() actions "
                                   "for the envs a recv() returned (or reset()) first")
            self._pool.resynchronize()  # replies owed by an interrupted synchronous call
            self._choose_ready_workers(self._pool.timeout)
        self._read_chosen()
        workers = sorted(self._chosen)
        for index in workers:
            self._send_seq[index] = -1
        self._workers_in_flight -= len(workers)
        self._chosen = []
        self._move()
        return self.envs.envs_of(workers)

    def _choose_ready_workers(self, timeout: float | None) -> None:
        """Pick ready workers until they make a batch; oldest sends first. Resumable: an
        interrupted call (Ctrl-C) keeps what it chose for the next one. With a
        ``timeout``, workers still silent after it are named in a WorkerTimeoutError."""
        need = self._batch_workers
        seq = self._send_seq
        chosen = self._chosen
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(chosen) < need:
            ready = self._ready_workers(chosen, deadline)
            if not ready and deadline is not None:
                self._pool.timed_out([w for w, s in enumerate(seq) if s >= 0 and w not in
                                      chosen], timeout, "in an async recv()")
            if len(ready) > need - len(chosen):
                ready.sort(key=seq.__getitem__)
                del ready[need - len(chosen):]
            for index in ready:
                if self._poller is not None:
                    self._poller.unregister(self._pool.fds[index])
                chosen.append(index)
        chosen.sort()
        self._unread = list(chosen)
        self._move()

    def _ready_workers(self, chosen: list[int], deadline: float | None) -> list[int]:
        """Block (in the kernel) until at least one in-flight, unchosen worker has replied;
        an empty list if ``deadline`` (``time.monotonic()``; None: none) passed first."""
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if self._poller is not None:
            events = (self._poller.poll() if left is None
                      else self._poller.poll(math.ceil(left * 1000)))
            return [self._fd_worker[fd] for fd, _event in events]
        conns = self._pool.conns
        waiting = [conns[w] for w, s in enumerate(self._send_seq) if s >= 0 and w not in chosen]
        ready = wait_connections(waiting, left)
        return [index for index, conn in enumerate(conns) if conn in ready]

    def _read_chosen(self) -> None:
        """Read the chosen workers' replies; resumable after an interrupted read."""
        unread = self._unread
        while unread:
            self._pool.read_reply_into(unread[0], self._reply_views[unread[0]])
            unread.pop(0)

    def drop_in_flight(self) -> None:
        """Forget every reply still owed by the workers (before a reset), also those of a
        pending ``step_async``; the pool resynchronizes their pipes before the next
        command, even after Ctrl-C."""
        if self.state is BatchState.IDLE:
            return
        self._waiting = None
        if self._poller is not None:
            for index, s in enumerate(self._send_seq):
                if s >= 0 and index not in self._chosen:
                    self._poller.unregister(self._pool.fds[index])
        self._send_seq = [-1] * len(self._ranges)
        self._workers_in_flight = 0
        self._chosen = []
        self._unread = []
        self._move()
        self._pool.unread_replies = True



class EnvpoolApiMixin:
    """envpool's ``send``/``recv``/``async_reset`` for :class:`shmenv.ShmVectorEnv`, over its
    :class:`AsyncBatcher` (what ``step(actions, env_ids)`` and an async-mode ``reset`` use).
    """

    num_envs: int
    _batcher: AsyncBatcher
    _outputs: StepOutputs
    _seeds: list[int | None]

    def _check_open(self) -> None:
        raise NotImplementedError

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
