"""First-ready async batches for the generic env: which workers are in flight, which reply
first, and envpool's ``send``/``recv`` on top (:class:`BatchMixin`).

The same rules as the Atari env's :mod:`shmenv.batching` (whose ``AsyncBatcher`` reads
fixed-size replies; the generic workers' replies carry pickled infos, so their reading is
:class:`shmenv.anycalls.Replies`'): the unit is the worker, every worker has
``batch_size / k`` envs, a ``recv`` returns the first ``k`` workers whose replies are ready,
the longest-waiting first when more are, sorted by env id. Waiting is a ``poll`` over the
in-flight pipes: it sleeps in the kernel.
"""

from __future__ import annotations

import math
import pickle
import select
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import Space
from gymnasium.vector.utils import batch_space, create_empty_array, iterate

from shmenv.actions import check_env_ids
from shmenv.anycalls import CallState, Replies, command_frame
from shmenv.anyoutputs import AnyOutputs, StepResult
from shmenv.anyspaces import BlockViews, put_rows, write_actions
from shmenv.pool import WorkerPool
from shmenv.protocol import OP_STEP


class ReadyBatches:
    """The in-flight workers of async batches and the choice of the next batch."""

    def __init__(self, pool: WorkerPool, ranges: Sequence[tuple[int, int]],
                 batch_size: int) -> None:
        self._pool = pool
        self.ranges = list(ranges)
        sizes = np.array([stop - start for start, stop in ranges])
        self.num_envs = int(sizes.sum())
        self.batch_size = batch_size
        self._sizes = sizes
        self._worker_of_env = np.repeat(np.arange(len(ranges)), sizes)
        self._batch_workers = batch_size // int(sizes[0])
        self._seq = [-1] * len(ranges)  # -1: not in flight; else the number of its send
        self._next_seq = 0
        self.workers_in_flight = 0
        self._poller = select.poll()
        self._fd_worker = {fd: index for index, fd in enumerate(pool.fds)}
        # The env ids of the last batch chosen, and its workers: the ids a recv() returned,
        # which the next send() gives back (no need to check them again).
        self._last_batch: tuple[np.ndarray, list[int]] = (np.empty(0, np.int64), [])
        self._ids_of = [np.arange(start, stop) for start, stop in ranges]  # per worker

    @property
    def envs_in_flight(self) -> int:
        return int(sum(self._sizes[w] for w, s in enumerate(self._seq) if s >= 0))

    def workers_of(self, env_ids: object) -> list[int]:
        """The workers whose envs ``env_ids`` lists: whole workers, none in flight."""
        last_ids, last_workers = self._last_batch
        if (isinstance(env_ids, np.ndarray) and env_ids.shape == last_ids.shape
                and env_ids.dtype == last_ids.dtype and np.array_equal(env_ids, last_ids)
                and all(self._seq[w] < 0 for w in last_workers)):
            return last_workers  # the ids the last recv() returned: checked then
        ids = check_env_ids(env_ids, self.num_envs)
        counts = np.bincount(self._worker_of_env[ids], minlength=len(self.ranges))
        partial = np.flatnonzero((counts > 0) & (counts != self._sizes))
        if partial.size:
            start, stop = self.ranges[partial[0]]
            raise ValueError(f"env_ids must list whole workers: envs {start}-{stop - 1} are "
                             "stepped together by one worker. Send exactly the env ids a "
                             "recv() returned.")
        workers = np.flatnonzero(counts).tolist()
        busy = [w for w in workers if self._seq[w] >= 0]
        if busy:
            start, stop = self.ranges[busy[0]]
            raise ValueError(f"envs {start}-{stop - 1} are already in flight: recv() their "
                             "results before sending them new actions")
        return workers

    def sent(self, workers: Sequence[int]) -> None:
        """``workers`` were sent a command whose reply a :meth:`choose` will pick up."""
        for index in workers:
            self._seq[index] = self._next_seq
            self._next_seq += 1
            self._poller.register(self._pool.fds[index], select.POLLIN)
        self.workers_in_flight += len(workers)

    def drop_all(self) -> None:
        """Forget every reply still owed (before a reset); the pool resynchronizes."""
        if self.envs_in_flight:
            for index, seq in enumerate(self._seq):
                if seq >= 0:
                    self._poller.unregister(self._pool.fds[index])
            self._seq = [-1] * len(self.ranges)
            self.workers_in_flight = 0
            self._pool.unread_replies = True

    def check_idle(self, what: str) -> None:
        """A call that steps or resets every env at once needs none in flight."""
        if self.workers_in_flight:
            raise RuntimeError(
                f"{what} steps every env, but {self.envs_in_flight} envs are in flight from "
                "send() or an async-mode reset(): pass env_ids (step(actions, "
                "infos['env_id']) is send + recv, as in envpool), or recv() them all first")

    def choose(self) -> list[int]:
        """Wait for a batch's worth of replies; returns those workers (oldest sends win),
        sorted, no longer in flight. A ``WorkerTimeoutError`` after the env's timeout."""
        in_flight = sum(seq >= 0 for seq in self._seq)
        if in_flight < self._batch_workers:
            raise RuntimeError(f"recv() returns {self.batch_size} envs but only "
                               f"{self.envs_in_flight} are in flight: send() actions for the "
                               "envs a recv() returned (or reset()) first")
        limit = self._pool.timeout
        deadline = None if limit is None else time.monotonic() + limit
        chosen: list[int] = []
        while len(chosen) < self._batch_workers:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            events = self._poller.poll(None if left is None else math.ceil(left * 1000))
            if not events:
                self._pool.timed_out([w for w, s in enumerate(self._seq) if s >= 0],
                                     limit, "in an async recv()")
            ready = sorted((self._fd_worker[fd] for fd, _event in events),
                           key=self._seq.__getitem__)
            for index in ready[:self._batch_workers - len(chosen)]:
                self._poller.unregister(self._pool.fds[index])
                self._seq[index] = -1
                self.workers_in_flight -= 1
                chosen.append(index)
        chosen.sort()
        ids = (self._ids_of[chosen[0]] if len(chosen) == 1
               else np.concatenate([self._ids_of[w] for w in chosen]))
        self._last_batch = ids, chosen
        return chosen


class BatchMixin:
    """envpool's ``send``/``recv``/``async_reset`` for the generic env, over
    :class:`ReadyBatches` (what the env's ``step(actions, env_ids)`` and async-mode
    ``reset`` use)."""

    num_envs: int
    num_workers: int
    single_action_space: Space
    _env_ranges: list[tuple[int, int]]
    _views: BlockViews
    _state: CallState
    _replies: Replies
    _batches: ReadyBatches
    _outputs: AnyOutputs
    _step_frame: memoryview

    def _check_open(self) -> None:
        raise NotImplementedError

    def _reset_frames(self, seed: Any, options: Any, what: str) -> list[memoryview]:
        raise NotImplementedError

    def send(self, actions: Any, env_ids: Any = None) -> None:
        """Start one step of the envs ``env_ids`` (all if None) and return at once;
        ``actions[k]`` is for env ``env_ids[k]``. The ids must make up whole workers, none
        of them in flight: the ``infos["env_id"]`` of a :meth:`recv` always do."""
        self._check_open()
        self._state.check_idle("send")
        ids = np.arange(self.num_envs) if env_ids is None else np.asarray(env_ids)
        workers = self._batches.workers_of(ids)
        if self._views.actions is not None:
            scratch = create_empty_array(self.single_action_space, n=len(ids))
            try:
                write_actions(self.single_action_space, scratch, actions)
            except ValueError as exc:  # its "env k" is the k-th of env_ids here
                raise ValueError(f"{exc}; env_ids of this send(): {ids.tolist()}") from None
            put_rows(self._views.actions, ids, scratch)
            frames = [self._step_frame] * len(workers)
        else:
            items = list(iterate(batch_space(self.single_action_space, len(ids)), actions))
            if len(items) != len(ids):
                raise ValueError(f"got {len(items)} actions for {len(ids)} envs")
            by_env = dict(zip(ids.tolist(), items))
            frames = [command_frame(OP_STEP, pickle.dumps(
                [by_env[env] for env in range(*self._env_ranges[w])])) for w in workers]
        self._replies.send_to(workers, frames)
        self._batches.sent(workers)

    def recv(self) -> StepResult:
        """The first ``batch_size`` envs whose step (or reset) is done, sorted by env id:
        ``(obs, rewards, terminations, truncations, infos)`` with ``infos["env_id"]``."""
        self._check_open()
        workers = self._batches.choose()
        try:
            payloads = self._replies.read(None, "in an async recv()", workers)
        except BaseException:
            self._batches.drop_all()  # a half-read batch is lost; the pool resyncs
            raise
        firsts = [self._env_ranges[w][0] for w in workers]
        if workers[-1] - workers[0] + 1 == len(workers):  # adjacent: one slice
            start, stop = firsts[0], self._env_ranges[workers[-1]][1]
            rows: slice | np.ndarray = slice(start, stop)
            env_ids = np.arange(start, stop)
        else:
            env_ids = np.concatenate([np.arange(*self._env_ranges[w]) for w in workers])
            rows = env_ids
        return self._outputs.batch_result(list(zip(firsts, payloads)), rows, env_ids)

    def async_reset(self, seed: int | Sequence[int | None] | None = None,
                    options: dict[str, Any] | None = None) -> None:
        """Reset every env without waiting (results still in flight are dropped); the
        reset envs come out of :meth:`recv`."""
        self._check_open()
        frames = self._reset_frames(seed, options, "async_reset")
        self._batches.drop_all()
        workers = list(range(self.num_workers))
        self._replies.send_to(workers, frames)
        self._batches.sent(workers)
