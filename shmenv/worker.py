"""The worker process: one command in, step its envs into the shared block, one reply out.

A worker owns a contiguous range of env slots. Per agent step it gets exactly one message
(its opcode and its envs' actions as int32) and sends exactly one back: a packed record per
env with reward, done flags, lives and the ended episode's statistics. Observations never
travel: each game writes its stack straight into its slot of the shared block.

Wire format (all little-endian, no pickling on the hot path):

* command: ``int32[1 + k]`` = ``[opcode, action_0, ..., action_{k-1}]``
* reply:   ``k`` records of :data:`REPLY_DTYPE` (28 bytes each)
* error:   :data:`ERROR_MAGIC` + pickled ``(type name, message, traceback text)``, padded so
  it is always longer than a reply; the main process detects it by its length alone.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from shmenv.block import BlockLayout, SharedBlock
from shmenv.games import GameOptions

OP_STEP = 1
OP_RESET = 2
OP_RESEED = 3  # followed by one pickled message: the new per-env seeds
OP_CLOSE = 4

_RECORD = struct.Struct("<ddiiBBBx")
REPLY_DTYPE = np.dtype(
    {
        "names": ["reward", "episode_return", "episode_length", "lives",
                  "terminated", "truncated", "has_final_obs"],
        "formats": ["<f8", "<f8", "<i4", "<i4", "u1", "u1", "u1"],
        "offsets": [0, 8, 16, 20, 24, 25, 26],
        "itemsize": _RECORD.size,
    }
)
ERROR_MAGIC = b"\x00shmenv-worker-error\x00"


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to start, picklable for spawn/forkserver."""

    index: int
    block_name: str
    layout: BlockLayout
    env_start: int
    env_stop: int
    game: str
    seeds: tuple[int | None, ...]
    options: GameOptions
    same_step_autoreset: bool
    write_final_obs: bool
    game_factory: Callable[..., Any] | None = None
    cpu: int | None = None  # core to pin this worker to (None: unpinned)


def error_payload(exc: BaseException, reply_nbytes: int) -> bytes:
    body = ERROR_MAGIC + pickle.dumps(
        (type(exc).__name__, str(exc), traceback.format_exc())
    )
    return body.ljust(reply_nbytes + 1, b"\x00")


def parse_error_payload(payload: bytes) -> tuple[str, str, str] | None:
    if not payload.startswith(ERROR_MAGIC):
        return None
    return pickle.loads(payload[len(ERROR_MAGIC):])


def _quiet_process() -> None:
    """Ctrl-C belongs to the main process: it raises KeyboardInterrupt there, and the
    workers must neither die nor print a traceback for it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import cv2

    cv2.setNumThreads(1)  # OpenCV's own threads only fight the other workers for cores


def run_worker(conn: Connection, spec: WorkerSpec, fds_to_close: tuple[int, ...] = ()) -> None:
    """Entry point of a worker process."""
    _quiet_process()
    for fd in fds_to_close:  # a forked child inherits its siblings' pipe ends; drop them
        try:
            os.close(fd)
        except OSError:
            pass
    num_envs = spec.env_stop - spec.env_start
    try:
        from shmenv.affinity import pin_current_process
        from shmenv.atari import AtariGame

        pin_current_process(spec.cpu)
        make_game = spec.game_factory or AtariGame
        block = SharedBlock.attach(spec.block_name, spec.layout)
        games = [
            make_game(spec.game, seed, spec.options, block.obs[env])
            for env, seed in zip(range(spec.env_start, spec.env_stop), spec.seeds)
        ]
    except BaseException as exc:  # report startup failures instead of dying silently
        conn.send(("error", (type(exc).__name__, str(exc), traceback.format_exc())))
        return
    conn.send(("ready", games[0].num_actions))
    try:
        _serve(conn, spec, block, games, num_envs)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the main process is gone: nothing to report to, just exit
    finally:
        block.close()


def _serve(conn: Connection, spec: WorkerSpec, block: SharedBlock, games: list,
           num_envs: int) -> None:
    command = np.zeros(1 + num_envs, dtype=np.int32)
    replies = bytearray(_RECORD.size * num_envs)
    reply_nbytes = len(replies)
    actions = command[1:]
    final_obs = block.final_obs[spec.env_start:spec.env_stop]
    needs_reset = [False] * num_envs
    same_step = spec.same_step_autoreset
    write_final = spec.write_final_obs
    pack = _RECORD.pack_into
    size = _RECORD.size

    while True:
        conn.recv_bytes_into(command)
        opcode = command[0]
        try:
            if opcode == OP_STEP:
                for j, game in enumerate(games):
                    if needs_reset[j]:  # NEXT_STEP autoreset: this step only resets
                        needs_reset[j] = False
                        game.reset()
                        pack(replies, j * size, 0.0, 0.0, 0, game.lives, 0, 0, 0)
                        continue
                    reward, terminated, truncated = game.step(int(actions[j]))
                    if not (terminated or truncated):
                        pack(replies, j * size, reward, 0.0, 0, game.lives, 0, 0, 0)
                        continue
                    episode_return, episode_length = game.episode_return, game.episode_length
                    if same_step:
                        if write_final:
                            game.write_final_stack(final_obs[j])
                        game.reset()
                    else:
                        game.write_final_stack(game.stack)
                        needs_reset[j] = True
                    pack(replies, j * size, reward, episode_return, episode_length,
                         game.lives, terminated, truncated, same_step and write_final)
            elif opcode in (OP_RESET, OP_RESEED):
                seeds = conn.recv() if opcode == OP_RESEED else None
                for j, game in enumerate(games):
                    if seeds is not None:
                        game.reseed(seeds[j])
                    game.reset()
                    needs_reset[j] = False
                    pack(replies, j * size, 0.0, 0.0, 0, game.lives, 0, 0, 0)
            elif opcode == OP_CLOSE:
                return
            else:
                raise ValueError(f"unknown opcode {opcode}")
        except Exception as exc:
            conn.send_bytes(error_payload(exc, reply_nbytes))
            continue
        conn.send_bytes(replies)
