"""Start-up of a generic env: gymnasium's argument checks and spaces, the block, the workers.

The checks raise what gymnasium's ``AsyncVectorEnv`` raises for the same arguments (with
its messages where tests match them); :func:`start_workers` creates the one block, starts
the worker processes on the shared :class:`shmenv.pool.WorkerPool` and unlinks the block's
name once every worker mapped it, so no exit path can leak it.
"""

from __future__ import annotations

import multiprocessing
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import Env, Space
from gymnasium.error import CustomSpaceError
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import (
    CloudpickleWrapper,
    batch_differing_spaces,
    batch_space,
    clear_mpi_env_vars,
    create_shared_memory,
)

from shmenv.affinity import worker_cpus
from shmenv.anyspaces import BlockPlan, RegionContext
from shmenv.anyworker import AnyWorkerSpec, run_any_worker
from shmenv.block import BlockLayout, SharedBlock
from shmenv.planning import (
    check_batch_size,
    check_relay_fanout,
    plan_workers,
    relay_tree,
    spin_budget,
    split_envs,
    subtree_stops,
)
from shmenv.pool import FailureNotes, WorkerPool, release

# Relayed steps start at this many workers. With two, relaying spares the main one write
# and one read per step but makes worker 0 wait for worker 1 (which starts a wake-up later)
# before it can answer: measured on 2 cores, 64 envs, relaying off cost 3-10% less CPU per
# env-step on HalfCheetah-v5 (4 runs) and 0-3% less on CartPole-v1 (docs/architecture.md).
RELAY_MIN_WORKERS = 3

NOTES = FailureNotes(
    died=". All workers were stopped and this env is closed; create a new one.",
    closed_while_waiting=("this AsyncVectorEnv was closed ({reason}) while this call "
                          "waited for its workers; create a new one"))


def check_unsupported(worker: Any, observation_mode: Any) -> None:
    """Refuse what the generic env cannot honour, and gymnasium's invalid modes."""
    if worker is not None:
        raise ValueError(
            "shmenv.AsyncVectorEnv runs its own worker loop (several envs per process, "
            "observations in shared memory), so it cannot take a custom `worker` "
            "function; use gymnasium.vector.AsyncVectorEnv for that.")
    if not isinstance(observation_mode, tuple) and observation_mode not in ("same",
                                                                        "different"):
        raise ValueError(
            "Invalid `observation_mode`, expected: 'same' or 'different' or tuple of "
            f"single and batch observation space, actual got {observation_mode}")


@dataclass(frozen=True)
class EnvFacts:
    """What the main process learns of the envs before starting any worker."""

    metadata: dict[str, Any]
    render_mode: str | None
    action_space: Space
    single_observation_space: Space
    observation_space: Space


def read_env_facts(env_fns: Sequence[Callable[[], Env]],
                   observation_mode: str | tuple[Space, Space]) -> EnvFacts:
    """As gymnasium does: one env made here tells the spaces and the metadata (and, for
    observation_mode="different", every env is made once to read its space)."""
    dummy = env_fns[0]()
    try:
        single_obs = dummy.observation_space
        if isinstance(observation_mode, tuple):
            if len(observation_mode) != 2 or not all(isinstance(space, Space)
                                                     for space in observation_mode):
                raise TypeError("observation_mode must be 'same' or a tuple of two Spaces "
                                f"(observation_space, single_observation_space), got "
                                f"{observation_mode!r}")
            batched, single_obs = observation_mode
        elif observation_mode == "same":
            batched = batch_space(single_obs, len(env_fns))
        else:
            every = []
            for env_fn in env_fns:
                env = env_fn()
                every.append(env.observation_space)
                env.close()
            batched = batch_differing_spaces(every)
        return EnvFacts(dict(dummy.metadata), dummy.render_mode, dummy.action_space,
                        single_obs, batched)
    finally:
        dummy.close()


def check_concurrency(max_concurrency: int | None) -> int | None:
    """gymnasium's checks of ``max_concurrency`` (with its messages)."""
    if max_concurrency is None:
        return None
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, (int, np.integer)):
        raise ValueError(f"`max_concurrency` must be an integer or None, got "
                         f"{type(max_concurrency)}.")
    if max_concurrency < 1:
        raise ValueError(f"`max_concurrency` must be a positive or None, got {max_concurrency}.")
    return int(max_concurrency)


def check_shared_memory(space: Space, num_envs: int) -> None:
    """gymnasium's errors for a space its shared memory cannot lay out: ValueError for a
    custom space, TypeError for one with a dynamic shape (Graph, Sequence)."""
    try:
        create_shared_memory(space, num_envs, ctx=RegionContext())  # type: ignore[arg-type]
    except CustomSpaceError as exc:
        raise ValueError(
            f"Using `AsyncVectorEnv(..., shared_memory=True)` caused an error: {exc} "
            "Pass shared_memory=False to send this space's observations pickled.") from exc


def check_reset_mask(mask: Any, num_envs: int) -> list[bool]:
    """gymnasium's checks of ``options["reset_mask"]`` (with its error types)."""
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"`options['reset_mask']` must be a numpy array, got {type(mask)}")
    if mask.shape != (num_envs,):
        raise ValueError(f"`options['reset_mask']` must have shape `({num_envs},)`, "
                         f"got {mask.shape}")
    if mask.dtype != np.bool_:
        raise TypeError(f"`options['reset_mask']` must have `dtype=np.bool_`, got {mask.dtype}")
    if not mask.any():
        raise ValueError("`options['reset_mask']` must contain a boolean array with at least "
                         f"one True value, got reset_mask={mask}")
    return mask.tolist()


@dataclass
class Started:
    """What :func:`start_workers` hands the env: the running pool and its block."""

    pool: WorkerPool
    block: SharedBlock
    ranges: list[tuple[int, int]]
    cpus: list[int | None]
    batch_size: int
    finalizer: weakref.finalize
    relayed: bool  # synchronous steps go through the relay tree (shmenv.anyrelay)


def start_workers(owner: Any, env_fns: Sequence[Callable[[], Env]], plan: BlockPlan, *,
                  autoreset_mode: AutoresetMode, same_spaces: bool,
                  num_workers: int | None, max_concurrency: int | None,
                  batch_size: int | None, cpu_affinity: bool | Sequence[int],
                  worker_spin_us: float | None, timeout: float | None,
                  context: str | None, daemon: bool, relay_fanout: int) -> Started:
    """Create the block and start the workers (each makes its envs); wait until ready.

    ``owner`` (the env) gets ``_shutdown`` on a failure and ``_forked`` in a forked child;
    the returned finalizer stops everything when it is closed or garbage collected."""
    num_envs = len(env_fns)
    batch = check_batch_size(batch_size, num_envs)
    cap = max_concurrency or num_envs
    if num_workers is None and batch == num_envs:
        num_workers = min(multiprocessing.cpu_count(), num_envs, cap)
    elif num_workers is not None and num_workers > cap:
        raise ValueError(f"num_workers={num_workers} exceeds max_concurrency={cap}: "
                         "each worker runs one env at a time")
    workers = plan_workers(num_envs, batch, num_workers, min(multiprocessing.cpu_count(), cap))
    ranges = split_envs(num_envs, workers)
    cpus = worker_cpus(cpu_affinity, workers)
    spin = spin_budget(worker_spin_us, workers)
    block = SharedBlock.create(BlockLayout(num_envs, (0, 0, 0), extra_bytes=plan.nbytes))
    fns = [CloudpickleWrapper(fn) for fn in env_fns]
    # Relayed steps need the actions in the block and serve synchronous steps of
    # RELAY_MIN_WORKERS or more workers.
    relay = (check_relay_fanout(relay_fanout) > 0 and plan.actions is not None
             and batch == num_envs and workers >= RELAY_MIN_WORKERS)
    children = (relay_tree(workers, relay_fanout) if relay else [[] for _ in ranges])
    stops = subtree_stops(ranges, children)
    specs = [AnyWorkerSpec(index, block.name, block.layout, plan, start, stop,
                           tuple(fns[start:stop]), autoreset_mode, same_spaces, cpus[index],
                           spin, tuple((child, ranges[child][0], stops[child])
                                       for child in children[index]))
             for index, (start, stop) in enumerate(ranges)]
    pool = WorkerPool(specs, notes=NOTES, on_failure=owner._shutdown, timeout=timeout,
                      target=run_any_worker, daemon=daemon)
    pool.set_on_fork(owner._forked)
    finalizer = pool.finalize(owner, _release, pool.conns, pool.processes, block)
    try:
        with clear_mpi_env_vars():
            pool.start(context)
    except BaseException:
        finalizer()
        raise
    block.unlink()  # every worker mapped it: from now on nothing can leak
    return Started(pool, block, ranges, cpus, batch, finalizer, relay)


def _release(conns: list, processes: list, block: SharedBlock) -> None:
    """Stop the workers and release the block (module level, for ``weakref.finalize``)."""
    release(conns, processes)
    block.close()
