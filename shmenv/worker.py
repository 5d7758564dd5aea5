"""The worker process: one command in, step its envs into the shared block, one reply out.

A worker owns a contiguous range of env slots. Per agent step it gets exactly one message
(its opcode and its envs' actions as int32) and sends exactly one back: a packed record per
env with reward, done flags, lives and the ended episode's statistics. Observations never
travel: each game writes its stack straight into its slot of the shared block.

Wire format (all little-endian, no pickling on the hot path):

* command: ``int32[1 + k]`` = ``[opcode, action_0, ..., action_{k-1}]``
* reply:   ``k`` records of :data:`REPLY_DTYPE` (36 bytes each)
* error:   :data:`ERROR_MAGIC` + pickled ``(type name, message, traceback text)``, padded so
  it is always longer than a reply; the main process detects it by its length alone.
* sync:    command ``int32[2]`` = ``[OP_SYNC, nonce]``, reply :data:`SYNC_MAGIC` + the nonce's
  4 bytes. After an interrupted call (Ctrl-C) the main process no longer knows where the
  stream stands; :func:`resynchronize` reads raw bytes up to this marker, after which the
  stream is at a message boundary again (see docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import secrets
import select
import signal
import struct
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from time import perf_counter
from typing import Any

import numpy as np

from shmenv.affinity import pin_current_process
from shmenv.atari import AtariGame  # imported here so that forked workers inherit it loaded
from shmenv.block import BlockLayout, SharedBlock
from shmenv.games import GameOptions
from shmenv.wire import header_value, read_frame_into, write_frame

OP_STEP = 1
OP_RESET = 2
OP_RESEED = 3  # followed by one pickled message: the new per-env seeds
OP_CLOSE = 4
OP_SYNC = 5  # followed by a nonce in the same command; answered with SYNC_MAGIC + nonce
RELAY = 0x100  # flag on OP_STEP: the command holds the actions of this worker's whole subtree

_RECORD = struct.Struct("<dddiiBBBB")
REPLY_DTYPE = np.dtype(
    {
        "names": ["reward", "episode_return", "episode_time", "episode_length", "lives",
                  "terminated", "truncated", "has_final_obs", "done"],
        "formats": ["<f8", "<f8", "<f8", "<i4", "<i4", "u1", "u1", "u1", "u1"],
        "offsets": [0, 8, 16, 24, 28, 32, 33, 34, 35],
        "itemsize": _RECORD.size,
    }
)
"""One env's reply. ``done`` is ``terminated or truncated``, sent so that the main process
copies one more column instead of running a ufunc on two. ``episode_return``,
``episode_time`` (wall seconds since the episode's reset, rounded to µs as gymnasium's
RecordEpisodeStatistics rounds it) and ``episode_length`` are 0 unless the episode ended
this step, so the main process can hand the columns out as they are, without per-env
work."""
SPIN_BACKOFF_STEPS = 8
ERROR_MAGIC = b"\x00shmenv-worker-error\x00"
SYNC_MAGIC = b"\x00shmenv-worker-sync\x00"


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
    spin_us: float = 0.0  # longest poll for the next command before sleeping (see _serve)
    # Relayed steps (see Relay): for each child in the relay tree, (worker index, first env,
    # env stop) of that child's whole subtree, in env order, right after this worker's envs.
    relay_children: tuple[tuple[int, int, int], ...] = ()

    @property
    def subtree_stop(self) -> int:
        """End of the env range this worker answers for when it relays a step."""
        return self.relay_children[-1][2] if self.relay_children else self.env_stop


DIED = "<died>"  # type name of an error report about a relay child that vanished


def error_payload(exc: BaseException, reply_nbytes: int, worker: int = 0) -> bytes:
    """An error report from ``worker``, padded to be longer than any reply it replaces."""
    return _error_payload((type(exc).__name__, str(exc), traceback.format_exc(), worker),
                          reply_nbytes)


def _error_payload(report: tuple[str, str, str, int], reply_nbytes: int) -> bytes:
    return (ERROR_MAGIC + pickle.dumps(report)).ljust(reply_nbytes + 1, b"\x00")


def parse_error_payload(payload: bytes) -> tuple[str, str, str, int] | None:
    """``(type name, message, traceback, index of the worker it happened in)``, or None if
    ``payload`` is not an error report. Type name :data:`DIED`: that worker is gone."""
    if not payload.startswith(ERROR_MAGIC):
        return None
    return pickle.loads(payload[len(ERROR_MAGIC):])  # ignores the padding


def resynchronize(conn: Connection, timeout: float) -> None:
    """Bring a worker's reply stream back to a message boundary, discarding what is unread.

    Needed after an exception (Ctrl-C) interrupted the main process between sending a
    command and reading the whole reply: a reply, or half of one, may still be in the pipe.
    Sends ``[OP_SYNC, nonce]`` and reads raw bytes until the worker's answer to that nonce,
    the last thing it sends before waiting for the next command. Raises ``EOFError`` if the
    worker is gone and ``TimeoutError`` if it does not answer within ``timeout`` seconds.
    """
    nonce = np.array([OP_SYNC, secrets.randbits(31)], dtype=np.int32)
    marker = SYNC_MAGIC + nonce[1:].tobytes()
    conn.send_bytes(nonce)
    deadline = time.monotonic() + timeout
    unread = b""
    while not unread.endswith(marker):
        if not conn.poll(max(deadline - time.monotonic(), 0)):
            raise TimeoutError(f"no answer to a sync request within {timeout:.0f} s")
        chunk = os.read(conn.fileno(), 1 << 16)
        if not chunk:
            raise EOFError("the worker closed its pipe")
        unread = (unread + chunk)[-(len(marker) + (1 << 16)):]


def _sync_reply(command: np.ndarray) -> bytes:
    return SYNC_MAGIC + command[1:2].tobytes()


def _is_sync_command(message: bytes) -> bool:
    return len(message) == 8 and int.from_bytes(message[:4], "little") == OP_SYNC


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread while starting workers.

    A child inherits the signal mask (across fork and exec), so a Ctrl-C that arrives while
    a spawned worker is still importing stays pending instead of printing a
    KeyboardInterrupt traceback from the worker; the worker discards it when it sets
    SIGINT to ignored. The main process gets its KeyboardInterrupt when the block ends.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _quiet_process() -> None:
    """Ctrl-C belongs to the main process: it raises KeyboardInterrupt there, and the
    workers must neither die nor print a traceback for it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # also drops a SIGINT pending since start
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    import cv2

    cv2.setNumThreads(1)  # OpenCV's own threads only fight the other workers for cores


def run_worker(conn: Connection, spec: WorkerSpec, fds_to_close: tuple[int, ...] = (),
               child_conns: tuple[Connection, ...] = ()) -> None:
    """Entry point of a worker process. ``child_conns``: the main process's ends of the
    pipes of this worker's relay children (``spec.relay_children``), for relayed steps."""
    _quiet_process()
    for fd in fds_to_close:  # a forked child inherits its siblings' pipe ends; drop them
        try:
            os.close(fd)
        except OSError:
            pass
    num_envs = spec.env_stop - spec.env_start
    block = None
    try:
        try:
            pin_current_process(spec.cpu)
            make_game = spec.game_factory or AtariGame
            block = SharedBlock.attach(spec.block_name, spec.layout)
            games = []
            for env, seed in zip(range(spec.env_start, spec.env_stop), spec.seeds):
                # The main process sends nothing until we are ready: a readable pipe means
                # it died (EOF) or is shutting down (a close command, after another worker
                # failed). Stop now, not after loading every ROM.
                if conn.poll(0):
                    conn.recv_bytes()  # EOFError if it died; a close command otherwise
                    return
                games.append(make_game(spec.game, seed, spec.options, block.obs[env]))
        except EOFError:
            raise
        except BaseException as exc:  # report startup failures instead of dying silently
            conn.send(("error", (type(exc).__name__, str(exc), traceback.format_exc())))
            return
        conn.send(("ready", games[0].num_actions))
        _serve(conn, spec, block, games, num_envs, Relay(spec, child_conns))
    except (EOFError, OSError):
        # The main process is gone (killed): nothing to report to. If it died during
        # start-up, before it unlinked the block's name, remove the name ourselves so
        # that nothing is left in /dev/shm (see docs/reliability.md).
        SharedBlock.remove_name(spec.block_name)
    finally:
        if block is not None:
            block.close()


class Relay:
    """Passes a relayed step down this worker's part of the relay tree and its replies up.

    Why: in a synchronous step the main process would otherwise write one command to and
    read one reply from every worker, and each of those wakes a process: on a VM about 20 µs
    of the main's CPU per worker per step, the largest part of its cost at 8+ workers. With
    the relay tree (see ``shmenv.vector.relay_tree``) the main writes one command to worker
    0 and reads one reply. Each worker forwards to its children the slices of the command
    that cover their subtrees, steps its own envs, then reads its children's replies
    straight into its own reply buffer and sends the whole range up. Every message is still
    one command or one reply of one worker's subtree on a Pipe (the design card's rule).

    Worker-to-worker streams are never left half-read: workers ignore Ctrl-C, so a relaying
    worker always reads every reply it asked for before it answers anything else.
    """

    def __init__(self, spec: WorkerSpec, child_conns: tuple[Connection, ...]) -> None:
        self.children = [(worker, start - spec.env_start, stop - spec.env_start, conn.fileno())
                         for (worker, start, stop), conn in zip(spec.relay_children, child_conns)]
        self._conns = child_conns  # keeps the descriptors open
        self._frames = []  # per child: [pipe header, opcode, its subtree's actions]
        for _worker, start, stop, _fd in self.children:
            frame = np.zeros(2 + stop - start, dtype=np.int32)
            frame[0] = header_value(4 * (1 + stop - start))
            self._frames.append(frame)
        self._frame_bytes = [memoryview(frame).cast("B") for frame in self._frames]
        self._header = bytearray(4)
        self._pollers = {}  # per child fd: a poll object, for spinning on its reply
        for _worker, _start, _stop, fd in self.children:
            self._pollers[fd] = select.poll()
            self._pollers[fd].register(fd, select.POLLIN)

    def forward(self, opcode: int, actions: np.ndarray) -> list[bool]:
        """Send each child ``opcode`` (relayed in turn) and its subtree's slice of
        ``actions`` (this worker's subtree, env-relative). Returns, per child, whether the
        command got through; a child that is gone is reported by :meth:`collect`."""
        reached = []
        for (_worker, start, stop, fd), frame, frame_bytes in zip(
                self.children, self._frames, self._frame_bytes):
            frame[1] = opcode
            frame[2:] = actions[start:stop]
            try:
                write_frame(fd, frame_bytes)
            except OSError:
                reached.append(False)
                continue
            reached.append(True)
        return reached

    def collect(self, reached: list[bool], replies: memoryview,
                record_size: int, spin_until: float = 0.0) -> tuple[str, str, str, int] | None:
        """Read every reached child's reply into its rows of ``replies``. Returns the first
        error report among them (a child's own, or :data:`DIED` for one that is gone).

        Until ``spin_until`` (a ``perf_counter`` time) it polls for a reply instead of
        sleeping on it, for the same reason a worker spins for its next command (see
        ``_serve``): a sleeping relay would add a wake-up to every step's critical path."""
        first_error = None
        for (worker, start, stop, fd), got_command in zip(self.children, reached):
            report = None
            if not got_command:
                report = (DIED, "", "", worker)
            else:
                poller = self._pollers[fd]
                while not poller.poll(0) and perf_counter() < spin_until:
                    pass
                try:
                    payload = read_frame_into(fd, self._header,
                                              replies[start * record_size:stop * record_size])
                except (EOFError, OSError):
                    payload = None
                    report = (DIED, "", "", worker)
                if payload is not None:
                    report = parse_error_payload(payload) or (
                        "WorkerError", "malformed reply", "", worker)
            if report is not None and first_error is None:
                first_error = report
        return first_error


def _serve(conn: Connection, spec: WorkerSpec, block: SharedBlock, games: list,
           num_envs: int, relay: Relay) -> None:
    subtree_envs = spec.subtree_stop - spec.env_start
    command = np.zeros(1 + subtree_envs, dtype=np.int32)  # room for a relayed step
    subtree_replies = memoryview(bytearray(_RECORD.size * subtree_envs))
    replies = subtree_replies[:_RECORD.size * num_envs]  # this worker's own envs
    reply_nbytes = len(replies)
    actions = command[1:1 + num_envs]
    subtree_actions = command[1:]
    final_obs = block.final_obs[spec.env_start:spec.env_stop]
    needs_reset = [False] * num_envs
    episode_started = [perf_counter()] * num_envs  # wall time of each episode's reset
    same_step = spec.same_step_autoreset
    write_final = spec.write_final_obs
    pack = _RECORD.pack_into
    size = _RECORD.size
    # Spin-then-sleep wait for the next command. A sleeping worker on an idle core (above
    # all in a VM) takes tens to hundreds of µs to wake, on every step's critical path. So
    # after replying, poll for up to `spin_window` (at most spec.spin_us and 10% of the step
    # just computed) before sleeping. A spin that ends empty-handed means the trainer does
    # other work between steps: then sleep at once for the next SPIN_BACKOFF_STEPS waits,
    # so at most ~1% of a core is wasted on it.
    spin_cap = spec.spin_us * 1e-6
    spin_window = 0.0
    skip_spins = 0
    replied_at = perf_counter()

    while True:
        if skip_spins:
            skip_spins -= 1
        elif spin_window:
            deadline = replied_at + spin_window
            while not conn.poll(0):
                if perf_counter() > deadline:
                    skip_spins = SPIN_BACKOFF_STEPS
                    break
        conn.recv_bytes_into(command)
        arrived = perf_counter()
        opcode = command[0]
        if opcode == OP_SYNC:
            conn.send_bytes(_sync_reply(command))
            continue
        relayed = None
        if opcode == OP_STEP | RELAY:
            relayed = relay.forward(opcode, subtree_actions)  # children first: they run
            opcode = OP_STEP  # while this worker steps its own envs
        error = None
        try:
            if opcode == OP_STEP:
                for j, game in enumerate(games):
                    if needs_reset[j]:  # NEXT_STEP autoreset: this step only resets
                        needs_reset[j] = False
                        game.reset()
                        episode_started[j] = perf_counter()
                        pack(replies, j * size, 0.0, 0.0, 0.0, 0, game.lives, 0, 0, 0, 0)
                        continue
                    reward, terminated, truncated = game.step(int(actions[j]))
                    if not (terminated or truncated):
                        pack(replies, j * size, reward, 0.0, 0.0, 0, game.lives, 0, 0, 0, 0)
                        continue
                    ended_at = perf_counter()
                    episode_time = round(ended_at - episode_started[j], 6)
                    episode_return, episode_length = game.episode_return, game.episode_length
                    if same_step:
                        if write_final:
                            game.write_final_stack(final_obs[j])
                        game.reset()
                        episode_started[j] = ended_at
                    else:
                        game.write_final_stack(game.stack)
                        needs_reset[j] = True
                    pack(replies, j * size, reward, episode_return, episode_time,
                         episode_length, game.lives, terminated, truncated,
                         same_step and write_final, 1)
            elif opcode in (OP_RESET, OP_RESEED):
                seeds = None
                if opcode == OP_RESEED:
                    message = conn.recv_bytes()
                    if _is_sync_command(message):  # the main process gave up this reseed
                        conn.send_bytes(SYNC_MAGIC + message[4:])
                        continue
                    seeds = pickle.loads(message)
                for j, game in enumerate(games):
                    if seeds is not None:
                        game.reseed(seeds[j])
                    game.reset()
                    needs_reset[j] = False
                    episode_started[j] = perf_counter()
                    pack(replies, j * size, 0.0, 0.0, 0.0, 0, game.lives, 0, 0, 0, 0)
            elif opcode == OP_CLOSE:
                return
            else:
                raise ValueError(f"unknown opcode {opcode}")
        except Exception as exc:
            error = error_payload(exc, reply_nbytes, spec.index)
        if relayed is not None:
            spin_until = perf_counter() + min(spin_cap, 0.1 * (perf_counter() - arrived))
            child_error = relay.collect(relayed, subtree_replies, size,
                                        spin_until if spin_cap else 0.0)
            if error is None and child_error is not None:
                error = _error_payload(child_error, len(subtree_replies))
            elif error is not None:
                error = error.ljust(len(subtree_replies) + 1, b"\x00")
        if error is not None:
            conn.send_bytes(error)
            continue
        conn.send_bytes(subtree_replies if relayed is not None else replies)
        replied_at = perf_counter()
        spin_window = min(spin_cap, 0.1 * (replied_at - arrived))
