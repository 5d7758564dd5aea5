"""The worker process: one command in, step its envs into the shared block, one reply out.

A worker owns a contiguous range of env slots. Per agent step it gets exactly one message
(its opcode and its envs' actions as int32) and sends exactly one back: a packed record per
env with reward, done flags, lives and the ended episode's statistics. Observations never
travel: each game writes its stack straight into its slot of the shared block. The
messages themselves are defined in :mod:`shmenv.protocol`.

Read top to bottom: the process bootstrap (:func:`run_worker`), the relay that passes a
step down the tree and replies up (:class:`Relay`), and the serve loop (:func:`_serve`).
"""

from __future__ import annotations

import os
import pickle
import select
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from time import perf_counter

import numpy as np

from shmenv.affinity import pin_current_process
from shmenv.atari import AtariGame  # imported here so that forked workers inherit it loaded
from shmenv.block import COLLECTED, RECEIVED, REPLIED, BlockLayout, SharedBlock
from shmenv.envpool_game import EnvpoolAtariGame  # the same
from shmenv.game import Game, GameFactory
from shmenv.games import GameOptions
from shmenv.protocol import (
    EACH_RESET,
    OP_CLOSE,
    OP_EACH,
    OP_RESEED,
    OP_RESET,
    OP_STEP,
    OP_SYNC,
    RELAY,
    REPLY_DTYPE,
    ErrorReport,
    RelayedParts,
    ReplyWriter,
    is_sync_command,
    sync_marker,
)
from shmenv.spinwait import SpinWait
from shmenv.wire import header_as_int32, read_frame_into, write_frame


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
    game_factory: GameFactory | None = None
    cpu: int | None = None  # core to pin this worker to (None: unpinned)
    spin_us: float = 0.0  # longest poll for the next command before sleeping (see _serve)
    # Relayed steps (see Relay): for each child in the relay tree, (worker index, first env,
    # env stop) of that child's whole subtree, in env order, right after this worker's envs.
    relay_children: tuple[tuple[int, int, int], ...] = ()

    @property
    def subtree_stop(self) -> int:
        """End of the env range this worker answers for when it relays a step."""
        return self.relay_children[-1][2] if self.relay_children else self.env_stop


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
            make_game: GameFactory = spec.game_factory or (
                EnvpoolAtariGame if spec.options.envpool_rules else AtariGame)
            block = SharedBlock.attach(spec.block_name, spec.layout)
            games: list[Game] = []
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
            conn.send(("error", ErrorReport.from_exception(exc, spec.index)))
            return
        conn.send(("ready", games[0].num_actions))
        relay_progress = block.progress if spec.relay_children and block.progress.size else None
        _serve(conn, spec, block, games, num_envs, Relay(spec, child_conns, relay_progress))
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
    the relay tree (see ``shmenv.planning.relay_tree``) the main writes one command to worker
    0 and reads one reply. Each worker forwards to its children the slices of the command
    that cover their subtrees, steps its own envs, then reads its children's replies
    straight into its own reply buffer and sends the whole range up. Every message is still
    one command or one reply of one worker's subtree on a Pipe.

    Worker-to-worker streams are never left half-read: workers ignore Ctrl-C, so a relaying
    worker always reads every reply it asked for before it answers anything else.
    """

    def __init__(self, spec: WorkerSpec, child_conns: tuple[Connection, ...],
                 progress: np.ndarray | None = None) -> None:
        self._progress = progress  # the block's progress rows, if it has them
        self.children = [(worker, start - spec.env_start, stop - spec.env_start, conn.fileno())
                         for (worker, start, stop), conn in zip(spec.relay_children, child_conns)]
        self._conns = child_conns  # keeps the descriptors open
        # Per child: [pipe header, opcode, its subtree's actions].
        self._frames: list[np.ndarray] = []
        for _worker, start, stop, _fd in self.children:
            frame = np.zeros(2 + stop - start, dtype=np.int32)
            frame[0] = header_as_int32(4 * (1 + stop - start))
            self._frames.append(frame)
        self._frame_bytes = [frame.data.cast("B") for frame in self._frames]
        self._header = bytearray(4)
        # Per child fd: a poll object, for spinning on its reply.
        self._pollers: dict[int, select.poll] = {}
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
                record_size: int, spin_until: float = 0.0) -> dict[int, ErrorReport]:
        """Read every reached child's reply into its rows of ``replies``. Returns the error
        reports among them by child worker, in child order (a child's own, or a "died" one
        for a child that is gone); empty if every child replied.

        Until ``spin_until`` (a ``perf_counter`` time) it polls for a reply instead of
        sleeping on it, for the same reason a worker spins for its next command (see
        ``_serve``): a sleeping relay would add a wake-up to every step's critical path."""
        errors = {}
        for (worker, start, stop, fd), got_command in zip(self.children, reached):
            report = None
            if not got_command:
                report = ErrorReport.died(worker)
            else:
                poller = self._pollers[fd]
                while not poller.poll(0) and perf_counter() < spin_until:
                    pass
                try:
                    payload = read_frame_into(fd, self._header,
                                              replies[start * record_size:stop * record_size])
                except (EOFError, OSError):
                    payload = None
                    report = ErrorReport.died(worker)
                else:
                    if self._progress is not None:
                        self._progress[worker, COLLECTED] += 1
                if payload is not None:
                    report = ErrorReport.decode(payload) or ErrorReport.malformed(worker)
            if report is not None:
                errors[worker] = report
        return errors


def _serve(conn: Connection, spec: WorkerSpec, block: SharedBlock, games: list[Game],
           num_envs: int, relay: Relay) -> None:
    size = REPLY_DTYPE.itemsize
    subtree_envs = spec.subtree_stop - spec.env_start
    command = np.zeros(1 + subtree_envs, dtype=np.int32)  # room for a relayed step
    subtree_replies = memoryview(bytearray(size * subtree_envs))
    replies = subtree_replies[:size * num_envs]  # this worker's own envs
    reply_nbytes = len(replies)
    actions = command[1:1 + num_envs]
    subtree_actions = command[1:]
    final_obs = block.final_obs[spec.env_start:spec.env_stop]
    needs_reset = [False] * num_envs
    episode_started = [perf_counter()] * num_envs  # wall time of each episode's reset
    restart_clock = [False] * num_envs  # NEXT_STEP: the pending reset starts a new episode
    same_step = spec.same_step_autoreset
    write_final = spec.write_final_obs
    writer = ReplyWriter(replies)
    ongoing, ended = writer.ongoing, writer.ended
    # The reset after a done: a game that has one tells a new game from a lost life whose
    # game goes on (on_life_loss="end_episode"); for the others it is a plain reset.
    next_episode = [getattr(game, "next_episode", game.reset) for game in games]
    # A done ends the episode's statistics unless the game goes on after a lost life.
    games_go_on = spec.options.on_life_loss == "end_episode"
    clip = spec.options.reward_clip
    # Relayed steps received and replied to, in this worker's row of the block: when a
    # relayed step hangs, the main finds the worker that holds it up there (WorkerPool).
    progress = (memoryview(block.progress[spec.index])
                if spec.index < spec.layout.num_workers else None)
    waiter = SpinWait(spec.spin_us)  # spin-then-sleep for the next command (see SpinWait)

    # One env's reset and step, shared by the batch commands and the drop-in Workers' per-env
    # ones (OP_EACH). A closure call costs ~0.1 µs per env against ~1 ms of emulation.
    def reset_env(j: int, game: Game) -> None:
        """An explicit reset command: a new episode (and game) now."""
        game.reset()
        needs_reset[j] = False
        episode_started[j] = perf_counter()
        ongoing(j, reward=0.0, raw_reward=0.0, lives=game.lives,
                elapsed_step=game.elapsed_step, game_over=game.game_over)

    def step_env(j: int, game: Game, action: int) -> None:
        if needs_reset[j]:  # NEXT_STEP autoreset: this step only resets
            needs_reset[j] = False
            next_episode[j]()
            if restart_clock[j]:
                episode_started[j] = perf_counter()
            ongoing(j, reward=0.0, raw_reward=0.0, lives=game.lives,
                    elapsed_step=game.elapsed_step, game_over=game.game_over)
            return
        reward, terminated, truncated = game.step(action)
        raw = reward
        if clip:
            reward = float((reward > 0.0) - (reward < 0.0))
        if not (terminated or truncated):
            ongoing(j, reward=reward, raw_reward=raw, lives=game.lives,
                    elapsed_step=game.elapsed_step, game_over=False)
            return
        ended_at = perf_counter()
        # Read before the reset: infos describe the step that ended.
        lives, elapsed, over = game.lives, game.elapsed_step, game.game_over
        episode_end = not games_go_on or truncated or over
        if episode_end:
            episode_time = round(ended_at - episode_started[j], 6)
            episode_return = game.episode_return
            episode_length = game.episode_length
        else:
            episode_time = episode_return = 0.0
            episode_length = 0
        if same_step:
            if write_final:
                game.write_final_stack(final_obs[j])
            next_episode[j]()
            if episode_end:
                episode_started[j] = ended_at
        else:
            game.write_final_stack(game.stack)
            needs_reset[j] = True
            restart_clock[j] = episode_end
        ended(j, reward=reward, raw_reward=raw, lives=lives, elapsed_step=elapsed,
              game_over=over, terminated=terminated, truncated=truncated,
              episode_end=episode_end, episode_return=episode_return,
              episode_time=episode_time, episode_length=episode_length)

    while True:
        waiter.wait(conn)
        conn.recv_bytes_into(command)
        arrived = perf_counter()
        opcode = command[0]
        if opcode == OP_SYNC:
            conn.send_bytes(sync_marker(command[:2]))
            continue
        relayed = None
        if opcode & RELAY:  # a relayed OP_STEP, or a relayed OP_EACH of drop-in Workers
            if progress is not None:
                progress[RECEIVED] += 1
            relayed = relay.forward(opcode, subtree_actions)  # children first: they run
            opcode = opcode & ~RELAY  # while this worker steps its own envs
        report = None
        try:
            if opcode == OP_STEP:
                for j, game in enumerate(games):
                    step_env(j, game, int(actions[j]))
            elif opcode == OP_EACH:  # drop-in Workers: each env has its own command
                for j, game in enumerate(games):
                    code = int(actions[j])
                    if code >= 0:
                        step_env(j, game, code)
                    elif code == EACH_RESET:
                        reset_env(j, game)
            elif opcode in (OP_RESET, OP_RESEED):
                seeds = None
                if opcode == OP_RESEED:
                    message = conn.recv_bytes()
                    if is_sync_command(message):  # the main process gave up this reseed
                        conn.send_bytes(sync_marker(message))
                        continue
                    seeds = pickle.loads(message)
                for j, game in enumerate(games):
                    if seeds is not None:
                        game.reseed(seeds[j])
                    reset_env(j, game)
            elif opcode == OP_CLOSE:
                return
            else:
                raise ValueError(f"unknown opcode {opcode}")
        except Exception as exc:
            report = ErrorReport.from_exception(exc, spec.index)
        if relayed is None:
            conn.send_bytes(replies if report is None else report.encode(reply_nbytes))
        else:
            errors = relay.collect(relayed, subtree_replies, size, waiter.spin_until(arrived))
            if report is not None:
                errors = {spec.index: report, **errors}
            if not errors:
                conn.send_bytes(subtree_replies)
            elif opcode == OP_EACH and relay.children:  # drop-in Workers fail per process
                conn.send_bytes(RelayedParts(bytes(subtree_replies), errors).encode(
                    len(subtree_replies)))
            else:  # a vector env fails as a whole, on the first error
                conn.send_bytes(next(iter(errors.values())).encode(len(subtree_replies)))
            if progress is not None:
                progress[REPLIED] += 1
        waiter.replied(arrived)
