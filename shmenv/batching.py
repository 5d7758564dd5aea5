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
"""

from __future__ import annotations

import select
from collections.abc import Sequence
from multiprocessing.connection import wait as wait_connections
from typing import Any

import numpy as np

from shmenv.planning import env_seeds
from shmenv.protocol import OP_RESEED, OP_RESET, OP_STEP

ALL_ENVS = slice(None)


class AsyncBatchingMixin:
    """``send``/``recv``/``async_reset`` for :class:`shmenv.vector.ShmVectorEnv`.

    Relies on the env's pipes (``_fds``, ``_conns``), command frames, ``_send_frames``,
    ``_gather`` (reads the replies of the workers listed in ``_pending``), ``_results``
    and ``_drain`` (resynchronizes every pipe when ``_unread_replies`` is set).
    """

    def _init_async_state(self) -> None:
        num_workers = self.num_workers
        sizes = np.array([stop - start for start, stop in self._env_ranges])
        self._worker_sizes = sizes
        self._worker_of_env = np.repeat(np.arange(num_workers), sizes)
        self._worker_env_ids = [np.arange(start, stop) for start, stop in self._env_ranges]
        self._fd_worker = {fd: index for index, fd in enumerate(self._fds)}
        self._batch_workers = (num_workers if self.batch_size == self.num_envs
                               else self.batch_size // int(sizes[0]))
        self._send_seq = [-1] * num_workers  # -1: idle; else the number of its last send
        self._next_seq = 0
        self._workers_in_flight = 0  # workers sent a command whose result recv() has not returned
        self._recv_batch: list[int] = []  # workers chosen by a recv() that was interrupted
        # The last recv()'s env ids (read-only) and workers: send(actions, those ids) skips
        # re-deriving the workers, the common case of an envpool loop.
        self._returned_ids: np.ndarray | None = None
        self._returned_workers: list[int] = []
        self._returned_slots: np.ndarray | None = None
        self._recv_chosen = False
        self._send_mask = np.zeros(self.num_envs, dtype=bool)
        self._gather_obs: np.ndarray | None = None
        self._poller = select.poll() if hasattr(select, "poll") else None

    # ------------------------------------------------------------------ public API
    def send(self, actions: Any, env_ids: Any = None) -> None:
        """Start one step of the envs ``env_ids`` (all envs if None) with ``actions``.

        ``actions[j]`` is for env ``env_ids[j]``. The ids must make up whole workers and none
        may be in flight; passing back exactly the ``infos["env_id"]`` of a ``recv()`` always
        does. Returns at once; collect the results with :meth:`recv`.
        """
        self._check_open()
        if env_ids is not None and env_ids is self._returned_ids:  # read-only: unchanged
            ids, workers, slots = env_ids, self._returned_workers, self._returned_slots
        else:
            ids = self._env_ids if env_ids is None else self._check_env_ids(env_ids)
            workers = self._workers_of(ids)
            slots = self._action_slots[ids]
        actions = self._check_batch_actions(actions, ids)
        busy = [w for w in workers if self._send_seq[w] >= 0]
        if busy:
            start, stop = self._env_ranges[busy[0]]
            raise ValueError(f"envs {start}-{stop - 1} are already in flight: recv() their "
                             "results before sending them new actions")
        self._drain()  # replies owed by an interrupted synchronous call
        commands = self._commands
        commands[slots] = actions
        for index in workers:
            commands[self._opcode_slots[index]] = OP_STEP
        self._mark_in_flight(workers)
        self._send_frames(workers)

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Wait for the first ``batch_size`` envs whose step (or reset) is done.

        Returns ``(obs, rewards, terminations, truncations, infos)`` for those envs, sorted by
        env id; ``infos["env_id"]`` says which they are. See the module docstring for when
        ``obs`` is a view and when it is gathered.
        """
        self._check_open()
        if not self._recv_chosen:
            if not self._recv_batch:
                self._drain()
            self._choose_ready_workers()
            self._recv_batch.sort()
            self._pending = list(self._recv_batch)
            self._recv_chosen = True
        self._gather()
        workers = self._recv_batch
        self._recv_batch = []
        self._recv_chosen = False
        for index in workers:
            self._send_seq[index] = -1
        self._workers_in_flight -= len(workers)

        first, last = workers[0], workers[-1]
        if last - first + 1 == len(workers):  # adjacent workers: a view of the block
            start, stop = self._env_ranges[first][0], self._env_ranges[last][1]
            envs: slice | np.ndarray = slice(start, stop)
            env_ids = self._env_ids[start:stop].copy()
            self._returned_slots = self._action_slots[envs]
        else:
            env_ids = envs = np.concatenate([self._worker_env_ids[w] for w in workers])
            self._returned_slots = self._action_slots[envs]
        obs, rewards, terminations, truncations, infos = self._results(envs)
        env_ids.flags.writeable = False  # so that send() can trust it by identity
        self._returned_ids, self._returned_workers = env_ids, workers
        infos["env_id"] = env_ids
        return obs, rewards, terminations, truncations, infos

    def async_reset(self, *, seed: int | Sequence[int] | None = None) -> None:
        """Reset every env without waiting; the reset envs come out of :meth:`recv`.

        Results still in flight are dropped. ``seed`` works as in ``reset``.
        """
        self._check_open()
        seeds = None if seed is None else env_seeds(seed, self.num_envs)
        self._drop_in_flight()
        self._drain()
        workers = list(range(self.num_workers))
        self._commands[self._opcode_slots] = OP_RESET if seeds is None else OP_RESEED
        self._mark_in_flight(workers)
        self._send_frames(workers)
        if seeds is not None:
            for conn, (start, stop) in zip(self._conns, self._env_ranges):
                conn.send(seeds[start:stop])
            self._seeds = seeds

    # ------------------------------------------------------------------ helpers
    def _obs_for(self, envs: slice | np.ndarray) -> np.ndarray:
        """The observations of ``envs``: a view for a range, one gather for a list."""
        obs = self._block.obs
        if envs is ALL_ENVS:
            return obs.copy() if self.copy else obs
        if isinstance(envs, slice):
            return obs[envs].copy() if self.copy else obs[envs]
        if self.copy:
            return obs[envs]
        if self._gather_obs is None or len(self._gather_obs) < len(envs):
            self._gather_obs = np.empty((len(envs),) + obs.shape[1:], dtype=obs.dtype)
        return np.take(obs, envs, axis=0, out=self._gather_obs[:len(envs)])

    def _envs_in_flight(self) -> int:
        return int(sum(self._worker_sizes[w] for w, s in enumerate(self._send_seq) if s >= 0))

    def _check_idle(self, what: str) -> None:
        if self._workers_in_flight:
            raise RuntimeError(
                f"{what} steps every env, but {self._envs_in_flight()} envs are in flight "
                "from send() or an async-mode reset(): pass env_ids (step(actions, "
                "infos['env_id']) is send + recv, as in envpool), or recv() them all first"
            )

    def _mark_in_flight(self, workers: Sequence[int]) -> None:
        poller = self._poller
        for index in workers:
            self._send_seq[index] = self._next_seq
            self._next_seq += 1
            if poller is not None:
                poller.register(self._fds[index], select.POLLIN)
        self._workers_in_flight += len(workers)

    def _choose_ready_workers(self) -> None:
        """Add ready workers to ``_recv_batch`` until it makes a batch; oldest sends first.

        Resumable: an interrupted call (Ctrl-C) keeps what it chose for the next one.
        """
        need = self._batch_workers
        if self._workers_in_flight < need:
            raise RuntimeError(f"recv() returns {self.batch_size} envs but only "
                               f"{self._envs_in_flight()} are in flight: send() actions for "
                               "the envs a recv() returned (or reset()) first")
        seq = self._send_seq
        chosen = self._recv_batch
        while len(chosen) < need:
            ready = self._ready_workers(chosen)
            if len(ready) > need - len(chosen):
                ready.sort(key=seq.__getitem__)
                del ready[need - len(chosen):]
            for index in ready:
                if self._poller is not None:
                    self._poller.unregister(self._fds[index])
                chosen.append(index)

    def _ready_workers(self, chosen: list[int]) -> list[int]:
        """Block (in the kernel) until at least one in-flight, unchosen worker has replied."""
        if self._poller is not None:
            return [self._fd_worker[fd] for fd, _event in self._poller.poll()]
        waiting = [self._conns[w] for w, s in enumerate(self._send_seq)
                   if s >= 0 and w not in chosen]
        return [self._conns.index(conn) for conn in wait_connections(waiting)]

    def _drop_in_flight(self) -> None:
        """Read and discard every reply still owed by the workers (before a reset)."""
        if self._recv_chosen:
            self._gather()  # the interrupted recv()'s batch is read: nothing more owed there
            owed = [w for w, s in enumerate(self._send_seq) if s >= 0 and w not in
                    self._recv_batch]
        else:
            owed = [w for w, s in enumerate(self._send_seq) if s >= 0]
        if self._poller is not None:
            for index in owed:
                if index not in self._recv_batch:
                    self._poller.unregister(self._fds[index])
        self._send_seq = [-1] * self.num_workers
        self._workers_in_flight = 0
        self._recv_batch = []
        self._recv_chosen = False
        if owed:
            self._unread_replies = True  # _drain() resynchronizes the pipes, even after Ctrl-C

    def _check_env_ids(self, env_ids: Any) -> np.ndarray:
        ids = np.asarray(env_ids)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise TypeError(f"env_ids must be a 1-D array of ints, got {ids.dtype} "
                            f"with shape {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_envs):
            bad = ids[(ids < 0) | (ids >= self.num_envs)][0]
            raise ValueError(f"env id {bad} is out of range: this env has ids "
                             f"0..{self.num_envs - 1}")
        return ids

    def _check_batch_actions(self, actions: Any, ids: np.ndarray) -> np.ndarray:
        array = np.asarray(actions)
        if array.shape != ids.shape:
            raise ValueError(f"actions must have shape {ids.shape}, one per env id, "
                             f"got shape {array.shape}")
        if array.dtype.kind not in "iu":
            raise TypeError(f"actions must be integers, got dtype {array.dtype}")
        if array.size and (array.min() < 0 or array.max() >= self._num_actions):
            index = int(np.flatnonzero((array < 0) | (array >= self._num_actions))[0])
            raise ValueError(f"action {array[index]!r} for env {ids[index]} is out of range: "
                             f"{self.game} has actions 0..{self._num_actions - 1}")
        return array

    def _workers_of(self, ids: np.ndarray) -> list[int]:
        """The workers whose envs ``ids`` lists, which must be all of each one's envs."""
        mask = self._send_mask
        mask[:] = False
        mask[ids] = True
        if np.count_nonzero(mask) != len(ids):
            raise ValueError("env_ids lists an env more than once")
        if not len(ids):
            raise ValueError("env_ids is empty")
        counts = np.bincount(self._worker_of_env[ids], minlength=self.num_workers)
        partial = np.flatnonzero((counts > 0) & (counts != self._worker_sizes))
        if partial.size:
            start, stop = self._env_ranges[partial[0]]
            raise ValueError(
                f"env_ids must list whole workers: envs {start}-{stop - 1} are stepped "
                f"together by one worker, but only {counts[partial[0]]} of them were given. "
                "Send exactly the env ids a recv() returned."
            )
        return np.flatnonzero(counts).tolist()
