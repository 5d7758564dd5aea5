"""shmenv: many Atari games in parallel processes, observations in one shared-memory block."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gymnasium.vector import AutoresetMode

from shmenv import envpool  # noqa: E402,I001 - envpool's API on shmenv (not envpool itself)
from shmenv.compat import Worker
from shmenv.errors import (
    ClosedError,
    ForkedEnvError,
    SharedMemorySpaceError,
    ShmenvError,
    WorkerDiedError,
    WorkerError,
    WorkerTimeoutError,
)
from shmenv.games import GameOptions, UnknownGameError, known_games, resolve_game
from shmenv.pooled import WorkerGroup
from shmenv.vector import ShmVectorEnv

__version__ = "0.1.0"


def make(
    game: str = "Breakout",
    num_envs: int = 8,
    *,
    seed: int | None = None,
    num_workers: int | None = None,
    copy: bool = False,
    autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
    batch_size: int | None = None,
    cpu_affinity: bool | Sequence[int] = False,
    timeout: float | None = None,
    **game_options: Any,
) -> ShmVectorEnv:
    """Create a :class:`ShmVectorEnv` running ``num_envs`` copies of ``game``.

    Args:
        game: any spelling of an ALE game: ``"Breakout"``, ``"ALE/Breakout-v5"``, ...
        num_envs: number of games.
        seed: env i is seeded with ``seed + i``; None seeds from fresh entropy.
        num_workers: worker processes; default ``min(num_envs, os.cpu_count())``.
        copy: return fresh obs arrays instead of views of the shared block.
        autoreset_mode: ``SAME_STEP`` (default, the labml design's behaviour) or ``NEXT_STEP``.
        batch_size: below ``num_envs``, async mode (envpool's API): ``send(actions,
            env_ids)`` and ``recv()`` returning the first ``batch_size`` ready envs with
            ``infos["env_id"]``; see :mod:`shmenv.batching` and docs/scaling.md.
        cpu_affinity: ``True`` pins workers round-robin to the cores this process may use,
            a list of core ids pins them round-robin to those; unsupported platforms warn
            and run unpinned.
        timeout: seconds any call may wait for a worker's reply (start-up excepted);
            a worker that does not answer in time is killed and named in a
            ``WorkerTimeoutError``, and the env is closed. None (default): no limit.
        **game_options: see :class:`GameOptions` (``frame_skip``, ``on_life_loss``,
            ``noop_max``, ``fire_reset``, ``reward_clip``, ``gray_scale``, ``size``,
            ``max_episode_steps``, ``maxpool``, ...), plus the advanced arguments below.

    Advanced arguments (keywords of :class:`ShmVectorEnv`):

    - ``context``: the multiprocessing start method ("fork", "spawn", "forkserver";
      default: the platform's).
    - ``game_factory(game, seed, options, stack_out)`` replaces
      :class:`shmenv.atari.AtariGame` in the workers (picklable, implementing
      :class:`shmenv.game.Game`); benchmarks use it to run a zero-cost game
      (:mod:`shmenv.fakegames`).
    - ``worker_spin_us``: after replying, a worker polls for its next command for up to
      this long (at most 10% of its step time, and only while commands do come that fast)
      before sleeping, because waking a sleeping process costs every synchronous step tens
      to hundreds of µs. Default: 500 when every worker can have a core of its own, else 0
      (never spin on an oversubscribed machine). 0 turns it off.
    - ``raw_pipes`` (default True where the platform allows): the main reads and writes
      multiprocessing's pipe framing on the raw descriptors (one ``readv`` per reply, see
      :mod:`shmenv.wire`); False uses ``Connection`` calls instead, with the same results
      and no relay tree.
    - ``relay_fanout`` (default 8): a synchronous ``step`` goes through a relay tree of the
      workers with up to this many children each: the main writes one command to worker 0
      and reads one reply for all envs, and workers pass slices down and replies up
      (:class:`shmenv.worker.Relay`), so the main's cost per step is nearly independent of
      the number of workers. 0: the main messages every worker itself. Async batches
      always address workers one by one.
    """
    return ShmVectorEnv(game, num_envs, seed=seed, num_workers=num_workers, copy=copy,
                        autoreset_mode=autoreset_mode, batch_size=batch_size,
                        cpu_affinity=cpu_affinity, timeout=timeout, **game_options)


__all__ = [
    "AutoresetMode",
    "ClosedError",
    "ForkedEnvError",
    "GameOptions",
    "SharedMemorySpaceError",
    "ShmVectorEnv",
    "ShmenvError",
    "UnknownGameError",
    "Worker",
    "WorkerDiedError",
    "WorkerError",
    "WorkerGroup",
    "WorkerTimeoutError",
    "__version__",
    "envpool",
    "known_games",
    "make",
    "resolve_game",
]
