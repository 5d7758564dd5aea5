"""Commands to every env at once and their replies: the synchronous step, and the reset.

A synchronous step is relayed where the env allows it (one frame to worker 0, one reply
for all envs back; see :class:`shmenv.worker.Relay`), else it is one frame to and one reply
from each worker; a reset always addresses each worker. Every buffer is allocated once:
the main's step writes the actions into a prepared frame and reads the replies into the
record array that :class:`shmenv.outputs.StepOutputs` turns into outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shmenv.outputs import StepOutput, StepOutputs
from shmenv.pool import WorkerPool
from shmenv.protocol import OP_RESEED, OP_RESET, OP_STEP, RELAY, REPLY_DTYPE
from shmenv.wire import header_as_int32


class CommandFrames:
    """The main's command buffer: one int32 array holding each worker's frame
    ``[pipe header, opcode, its actions...]``, so sending a command is one write."""

    def __init__(self, ranges: Sequence[tuple[int, int]], header: Any) -> None:
        num_envs = ranges[-1][1]
        self.commands = np.zeros(num_envs + 2 * len(ranges), dtype=np.int32)
        self.opcode_slots = np.array([start + 2 * w + 1 for w, (start, _) in enumerate(ranges)])
        self.action_slots = np.concatenate(
            [np.arange(start, stop) + 2 * w + 2 for w, (start, stop) in enumerate(ranges)])
        commands_bytes = self.commands.data.cast("B")
        self.frames = []
        for w, (start, stop) in enumerate(ranges):
            self.commands[start + 2 * w] = header(4 * (1 + stop - start))
            self.frames.append(commands_bytes[4 * (start + 2 * w): 4 * (stop + 2 * w + 2)])


class AllEnvs:
    """Sends every env a step or a reset over the pool and reads every reply.

    :meth:`step` is the synchronous step; :meth:`send_step`/:meth:`read_step` are its two
    halves (gymnasium's ``step_async``/``step_wait``), :meth:`send_reset`/:meth:`read_reset`
    a reset's. The caller checks the actions and resynchronizes the pool first.
    ``frames`` and ``reply_views`` (each worker's rows of the record array) are shared
    with the async batches.
    """

    def __init__(self, pool: WorkerPool, ranges: Sequence[tuple[int, int]],
                 outputs: StepOutputs, relayed: bool) -> None:
        num_envs = ranges[-1][1]
        self.relayed = relayed
        self._pool = pool
        self._ranges = list(ranges)
        self._outputs = outputs
        self.frames = CommandFrames(ranges, header_as_int32)
        replies_bytes = outputs.replies.data.cast("B")
        size = REPLY_DTYPE.itemsize
        self.reply_views = [replies_bytes[size * start: size * stop] for start, stop in ranges]
        # A relayed step: one frame [pipe header, OP_STEP | RELAY, every env's action] to
        # worker 0, one reply covering every env back (see shmenv.worker.Relay).
        self._relay_command = np.zeros(2 + num_envs, dtype=np.int32)
        self._relay_command[:2] = header_as_int32(4 * (1 + num_envs)), OP_STEP | RELAY
        self._relay_actions = self._relay_command[2:]
        self._relay_frame = self._relay_command.data.cast("B")
        self._all_replies = replies_bytes

    def step(self, actions: np.ndarray) -> StepOutput:
        """Step every env with its (checked) action and return the outputs."""
        if self.relayed:  # one write, one read (see shmenv.worker.Relay)
            self._relay_actions[:] = actions
            self._pool.round_trip(self._relay_frame, self._all_replies)
        else:
            self.frames.commands[self.frames.action_slots] = actions
            self.send_all(OP_STEP)
            self._pool.read_from_all(self.reply_views, when="in a step")
        return self._outputs.results()

    def send_step(self, actions: np.ndarray) -> None:
        """Send every env its (checked) action without waiting for the replies."""
        if self.relayed:
            self._relay_actions[:] = actions
            self._pool.send_relayed(self._relay_frame)
        else:
            self.frames.commands[self.frames.action_slots] = actions
            self.send_all(OP_STEP)

    def read_step(self, timeout: float | None) -> StepOutput:
        """The outputs of the step :meth:`send_step` sent, waiting up to ``timeout`` s."""
        if self.relayed:
            self._pool.read_relayed(self._all_replies, timeout)
        else:
            self._pool.read_from_all(self.reply_views, timeout, "in a step")
        return self._outputs.results()

    def send_reset(self, seeds: list[int | None] | None) -> None:
        """Send every worker a reset (or a reseed and its envs' ``seeds``)."""
        self._pool.resynchronize()
        self.send_all(OP_RESET if seeds is None else OP_RESEED)
        if seeds is not None:
            for index, (start, stop) in enumerate(self._ranges):
                self._pool.send_object(index, seeds[start:stop])

    def read_reset(self, timeout: float | None) -> tuple[np.ndarray, dict[str, Any]]:
        """Every env's ``(obs, infos)`` after :meth:`send_reset`, within ``timeout`` s."""
        self._pool.read_from_all(self.reply_views, timeout, "in a reset")
        obs, _rewards, _terminations, _truncations, infos = self._outputs.results()
        return obs, infos

    def send_all(self, opcode: int) -> None:
        """Send every worker its prepared frame with ``opcode``: one write per worker."""
        self.frames.commands[self.frames.opcode_slots] = opcode
        self._pool.send_to_all(self.frames.frames)
