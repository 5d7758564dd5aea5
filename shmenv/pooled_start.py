"""Start-up and teardown of a drop-in group: its block, its processes, its lifecycle states.

:class:`GroupStart` is :class:`shmenv.pooled.WorkerGroup`'s base for what happens once, at
the start and at the end: seal the group at its first command, create the block sized for
every member, start ``min(members, processes)`` workers over it and wait for their games;
release all of it when the last member closes or start-up fails. The per-command hot path is
not here (see :mod:`shmenv.pooled_commands`).
"""

from __future__ import annotations

import enum
import functools
import os
import threading
from multiprocessing.process import BaseProcess
from typing import Any

from shmenv import pooled_errors
from shmenv.block import BlockLayout, SharedBlock
from shmenv.errors import ClosedError
from shmenv.planning import spin_budget, split_envs
from shmenv.pool import FailureNotes, WorkerPool, release
from shmenv.pooled_commands import MemberCommands
from shmenv.pooled_frames import GroupFrames
from shmenv.pooled_members import GameConfig, Members
from shmenv.pooled_relay import relay_children
from shmenv.sysinfo import usable_cores
from shmenv.worker import WorkerSpec


class GroupState(enum.Enum):
    OPEN = "open"  # taking members; nothing started
    LAUNCHED = "launched"  # sealed, block created, processes started, not known to be ready
    RUNNING = "running"
    CLOSED = "closed"


def _release_all(conns: list, processes: list, block_box: list) -> None:
    """Stop every process and close the block: a module-level function over plain lists, so
    that the group's ``weakref.finalize`` does not keep the group alive."""
    release(conns, processes)
    for block in block_box:
        block.close()


def _new_pool(block: SharedBlock, config: GameConfig, seeds: list[Any],
              ranges: list[tuple[int, int]], spin_us: float,
              relayed_to: tuple[tuple[int, int, int], ...]) -> WorkerPool:
    """The pool (not launched yet): each process steps a run of members' envs with the labml
    design's same-step reset (a done returns the fresh reset stack), no final stacks."""
    specs = [WorkerSpec(index=p, block_name=block.name, layout=block.layout, env_start=start,
                        env_stop=stop, game=config.game, seeds=tuple(seeds[start:stop]),
                        options=config.options, same_step_autoreset=True,
                        write_final_obs=False, game_factory=config.game_factory,
                        spin_us=spin_us, relay_children=relayed_to if p == 0 else ())
             for p, (start, stop) in enumerate(ranges)]
    describe = functools.partial(pooled_errors.describe_process, tuple(seeds), tuple(ranges))
    return WorkerPool(specs, describe=describe, notes=FailureNotes())


class GroupStart:
    """Launch, readiness and release of a group's block and processes (a base of
    :class:`shmenv.pooled.WorkerGroup`, whose attributes it reads)."""

    _pool: WorkerPool  # set when the group starts
    _commands: MemberCommands
    _block: SharedBlock
    _config: GameConfig | None
    _members: Members
    _lock: threading.RLock
    _state: GroupState
    _max_processes: int | None
    _context: str | None
    _spin_us: float | None
    _relay_fanout: int
    _timeout: float | None
    _creator: int  # the pid that made the group: only it may command or close it
    seeds: list[Any]

    @property
    def num_members(self) -> int:
        return len(self._members)

    def _check_process(self) -> None:
        if os.getpid() != self._creator:
            raise pooled_errors.forked(self._creator)

    def start(self) -> None:
        """Start the processes now and wait until every game is loaded (otherwise the first
        command to any member does it). Seals the group."""
        with self._lock:
            self._check_process()
            if self._state is GroupState.CLOSED:
                raise ClosedError("this WorkerGroup is closed; create a new one")
            self._ensure_running()

    def process_of(self, slot: int) -> BaseProcess:
        """The process serving member ``slot``; launches the group if it was still open."""
        with self._lock:
            try:
                self._launch()
            except BaseException:
                self._members.reported(slot)
                raise
            if not hasattr(self, "_commands"):  # it failed to start before any process ran
                self._members.check_open(slot)
            return self._pool.processes[self._commands.process_of(slot)]

    @property
    def processes(self) -> list[BaseProcess]:
        """The group's processes (empty until it starts)."""
        pool = getattr(self, "_pool", None)
        return list(pool.processes) if pool is not None else []

    def _launch(self) -> None:
        """Seal the group, create its block and start its processes, without waiting."""
        if self._state is not GroupState.OPEN:
            return
        if self._config is None:
            raise ValueError("this WorkerGroup has no Workers to start")
        self._state = GroupState.LAUNCHED
        count = self.num_members
        ranges = split_envs(count, min(count, self._max_processes or usable_cores()))
        try:
            relayed_to = relay_children(ranges, self._relay_fanout)
            # Progress rows for a relaying group: see shmenv.pooled_relay.
            self._block = SharedBlock.create(BlockLayout(
                count, self._config.options.obs_shape,
                num_workers=len(ranges) if relayed_to else 0))
            self._pool = _new_pool(self._block, self._config, self.seeds, ranges,
                                   spin_budget(self._spin_us, len(ranges)), relayed_to)
            # Detached in a forked child (see WorkerPool.forked_away): its exit leaves the
            # parent's pool running.
            self._finalizer = self._pool.finalize(self, _release_all, self._pool.conns,
                                                  self._pool.processes, [self._block])
            self._pool.launch(self._context, name="shmenv-Workers-{index}")
            frames = GroupFrames(self._pool, ranges, self._members.states,
                                 self._block.progress if relayed_to else None)
            self._commands = MemberCommands(self._pool, frames, self._members,
                                            list(self._block.obs), self._timeout)
        except BaseException as exc:
            self._fail_all(exc)
            raise

    def _ensure_running(self) -> None:
        if self._state is GroupState.RUNNING:
            return
        self._launch()
        if self._state is GroupState.CLOSED:
            return
        try:
            self._num_actions = self._pool.wait_until_ready()
        except BaseException as exc:  # a game failed to load, or Ctrl-C during start-up
            self._fail_all(exc)
            raise
        self._block.unlink()  # every process has mapped it: nothing can leak from here on
        self._state = GroupState.RUNNING
        self._commands.stop_idle()  # processes whose Workers were all closed before this

    def _fail_all(self, error: BaseException) -> None:
        """A start-up failure: release everything; every member raises ``error`` once."""
        why = "it failed to start"
        if not isinstance(error, Exception):  # Ctrl-C: the caller gets it, members ClosedError
            error = ClosedError(f"the Workers' start-up was interrupted ({why})")
        self._members.fail(range(self.num_members), error, why)
        self._close_group()

    def _close_group(self) -> None:
        self._state = GroupState.CLOSED
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()
        elif hasattr(self, "_block"):  # it failed between creating the block and the pool
            self._block.close()
