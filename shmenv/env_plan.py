"""A ShmVectorEnv's arguments checked and turned into its plan, before any process or memory.

Every check runs here, in a fixed order, before the shared block exists: bad input raises
a clear error and leaves nothing behind. The rules themselves live in
:mod:`shmenv.planning` (pure) and :mod:`shmenv.affinity`; this module applies them to one
env's arguments and writes each worker's start-up spec.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gymnasium.vector import AutoresetMode

from shmenv.affinity import worker_cpus
from shmenv.block import BlockLayout, SharedBlock
from shmenv.game import GameFactory
from shmenv.games import GameOptions, resolve_game
from shmenv.planning import (
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
from shmenv.wire import RAW_PIPES
from shmenv.worker import WorkerSpec


@dataclass(frozen=True)
class EnvPlan:
    """What a ShmVectorEnv's arguments come to (see :meth:`from_args`)."""

    game: str  # the ROM's name
    options: GameOptions
    num_envs: int
    num_workers: int
    batch_size: int
    autoreset_mode: AutoresetMode
    timeout: float | None
    seeds: list[int | None]
    env_ranges: list[tuple[int, int]]  # each worker's envs as (start, stop)
    worker_cpus: list[int | None]
    raw_pipes: bool
    relayed: bool  # synchronous steps go through the relay tree
    relay_children: list[list[int]]  # each worker's children in that tree
    spin_us: float

    @classmethod
    def from_args(cls, game: str, num_envs: int, *, seed: int | Sequence[int] | None,
                  num_workers: int | None, autoreset_mode: AutoresetMode | str,
                  batch_size: int | None, cpu_affinity: bool | Sequence[int],
                  worker_spin_us: float | None, relay_fanout: int, raw_pipes: bool,
                  timeout: float | None, game_options: dict[str, Any]) -> EnvPlan:
        """Check every argument (see :class:`shmenv.ShmVectorEnv`) and plan the workers."""
        options = GameOptions.from_kwargs(game_options)
        rom = resolve_game(game)
        num_envs = check_num_envs(num_envs)
        batch_size = check_batch_size(batch_size, num_envs)
        workers = int(plan_workers(num_envs, batch_size, num_workers,
                                   multiprocessing.cpu_count()))
        autoreset_mode = check_autoreset_mode(autoreset_mode)
        relay_fanout = check_relay_fanout(relay_fanout)
        timeout = check_timeout(timeout)
        seeds = env_seeds(seed, num_envs)
        ranges = split_envs(num_envs, workers)
        cpus = worker_cpus(cpu_affinity, workers)
        raw_pipes = bool(raw_pipes) and RAW_PIPES
        # Relayed steps need raw pipe I/O and only serve synchronous steps of 2+ workers.
        relayed = raw_pipes and relay_fanout > 0 and batch_size == num_envs and workers > 1
        children = (relay_tree(workers, relay_fanout) if relayed
                    else [[] for _ in range(workers)])
        spin_us = spin_budget(worker_spin_us, workers)
        return cls(game=rom, options=options, num_envs=num_envs, num_workers=workers,
                   batch_size=batch_size, autoreset_mode=autoreset_mode, timeout=timeout,
                   seeds=seeds, env_ranges=ranges, worker_cpus=cpus, raw_pipes=raw_pipes,
                   relayed=relayed, relay_children=children, spin_us=spin_us)

    @property
    def same_step(self) -> bool:
        """Whether a finished env resets in the step that ended it (gymnasium SAME_STEP)."""
        return self.autoreset_mode == AutoresetMode.SAME_STEP

    @property
    def block_layout(self) -> BlockLayout:
        """The shared block; relayed steps count their progress in it, to name a hung
        worker."""
        return BlockLayout(self.num_envs, self.options.obs_shape,
                           self.num_workers if self.relayed else 0)

    def worker_specs(self, block: SharedBlock,
                     game_factory: GameFactory | None) -> list[WorkerSpec]:
        """Each worker's start-up spec: its envs, their seeds, its core and relay children."""
        ranges, children = self.env_ranges, self.relay_children
        stops = subtree_stops(ranges, children)
        return [WorkerSpec(
            index=index, block_name=block.name, layout=block.layout, env_start=start,
            env_stop=stop, seeds=tuple(self.seeds[start:stop]), cpu=self.worker_cpus[index],
            relay_children=tuple((child, ranges[child][0], stops[child])
                                 for child in children[index]),
            game=self.game, options=self.options, same_step_autoreset=self.same_step,
            write_final_obs=self.same_step, game_factory=game_factory, spin_us=self.spin_us,
        ) for index, (start, stop) in enumerate(ranges)]
