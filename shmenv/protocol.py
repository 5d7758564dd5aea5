"""The wire protocol between the main process and its workers, in one place.

All little-endian, no pickling on the hot path:

* command: ``int32[1 + k]`` = ``[opcode, action_0, ..., action_{k-1}]``; a relayed step
  (:data:`RELAY` set on :data:`OP_STEP`) holds the actions of the worker's whole subtree;
  :data:`OP_EACH` holds one command per env instead (an action, :data:`EACH_SKIP` or
  :data:`EACH_RESET`), for drop-in Workers that share a worker.
* reply:   ``k`` records of :data:`REPLY_DTYPE`, written by :class:`ReplyWriter`.
* error:   :class:`ErrorReport`, encoded by :meth:`ErrorReport.encode`: a magic prefix and
  a pickle, padded so it is always longer than the reply it replaces; the main process
  tells it from a reply by its length alone. A relayed :data:`OP_EACH` that failed in
  some processes answers :class:`RelayedParts` instead, encoded the same way.
* sync:    command ``int32[2]`` = ``[OP_SYNC, nonce]``, answered with :data:`SYNC_MAGIC` +
  the nonce's 4 bytes, the marker after which a stream is at a message boundary again
  (see docs/reliability.md).
* start-up: one pickled message per worker, ``("ready", num_actions)`` or
  ``("error", ErrorReport)``.
"""

from __future__ import annotations

import dataclasses
import enum
import pickle
import struct
import traceback
from dataclasses import dataclass
from typing import TypeVar

import numpy as np


class Op(enum.IntEnum):
    """Command opcodes (the first int32 of a command)."""

    STEP = 1
    RESET = 2
    RESEED = 3  # followed by one pickled message: the new per-env seeds
    CLOSE = 4
    SYNC = 5  # followed by a nonce in the same command; answered with SYNC_MAGIC + nonce
    EACH = 6  # one command per env: an action (step), EACH_RESET, or EACH_SKIP (leave it)
    # The generic worker (shmenv.anyworker) only; each is followed by one pickled message.
    CALL = 7  # (name, args, kwargs): call or read an attribute of every env
    SET_ATTR = 8  # (name, [one value per env of the worker])


# Plain ints for the worker loop, which compares a numpy int32 against them every step.
OP_STEP = int(Op.STEP)
OP_RESET = int(Op.RESET)
OP_RESEED = int(Op.RESEED)
OP_CLOSE = int(Op.CLOSE)
OP_SYNC = int(Op.SYNC)
OP_EACH = int(Op.EACH)
OP_CALL = int(Op.CALL)
OP_SET_ATTR = int(Op.SET_ATTR)
# OP_EACH's codes besides actions (>= 0). A skipped env is not touched: its slot and its
# record in the reply stay what its last command left, so a reply's skipped records repeat
# the ones sent before (the drop-in Workers' pool relies on this; see shmenv.pooled).
EACH_SKIP = -1
EACH_RESET = -2
RELAY = 0x100  # flag on OP_STEP or OP_EACH: the command covers this worker's whole subtree

_RECORD = struct.Struct("<dddiifiBBBBBxxx")
REPLY_DTYPE = np.dtype(
    {
        "names": ["reward", "episode_return", "episode_time", "episode_length", "lives",
                  "raw_reward", "elapsed_step", "terminated", "truncated", "done",
                  "game_over", "episode_end"],
        "formats": ["<f8", "<f8", "<f8", "<i4", "<i4", "<f4", "<i4", "u1", "u1", "u1", "u1",
                    "u1"],
        "offsets": [0, 8, 16, 24, 28, 32, 36, 40, 41, 42, 43, 44],
        "itemsize": _RECORD.size,
    }
)
"""One env's reply (48 bytes, a multiple of 8 so that every record's float64 fields are
aligned). ``reward`` is what the step returns (clipped under ``reward_clip``),
``raw_reward`` the sum of the frames' rewards; ``lives``, ``elapsed_step`` and
``game_over`` (a real game over) describe the step that just ended, also when the env was
reset right after it. ``done`` is ``terminated or truncated``, sent so that the main
process copies one more column instead of running a ufunc on two. ``episode_end`` marks the
records that carry episode statistics: every done, except a lost life whose game goes on
(``on_life_loss="end_episode"``), which is not the end of a game. ``episode_return``,
``episode_time`` (wall seconds since the episode's reset, rounded to µs as gymnasium's
RecordEpisodeStatistics rounds it) and ``episode_length`` are 0 unless ``episode_end``, so
the main process can hand the columns out as they are, without per-env work."""
assert _RECORD.size == 48
REPLY_STRUCT = _RECORD
"""The record as a ``struct.Struct``: one ``unpack_from`` reads one env's whole record,
cheaper than numpy field access when a caller wants one env's values as Python objects."""


_STRUCT_CODES = {"f8": "d", "f4": "f", "i4": "i", "u1": "B"}


def record_struct(*names: str) -> struct.Struct:
    """A ``struct.Struct`` that reads only the fields ``names`` of a reply record, in
    record order, with offsets and types taken from :data:`REPLY_DTYPE`. Why: a caller that
    needs a few fields of each record (the drop-in's reply) makes only those objects."""
    parts, position = ["<"], 0
    for name in sorted(names, key=lambda field: REPLY_DTYPE.fields[field][1]):  # type: ignore[index]
        dtype, offset = REPLY_DTYPE.fields[name][:2]  # type: ignore[index]
        if offset > position:
            parts.append(f"{offset - position}x")
        parts.append(_STRUCT_CODES[dtype.str[1:]])
        position = offset + dtype.itemsize
    return struct.Struct("".join(parts))


class ReplyWriter:
    """Packs reply records into a worker's reply buffer, by field name.

    Two kinds of record: :meth:`ongoing` (the episode goes on, or just reset: no episode
    statistics) and :meth:`ended` (the episode ended this step, with its statistics). Both
    are one ``struct.pack_into`` call, as cheap as packing positionally.
    """

    __slots__ = ("_buffer", "_pack", "_size")

    def __init__(self, buffer: memoryview) -> None:
        self._buffer = buffer
        self._pack = _RECORD.pack_into
        self._size = _RECORD.size

    def ongoing(self, j: int, *, reward: float, raw_reward: float, lives: int,
                elapsed_step: int, game_over: bool) -> None:
        """Record ``j``: an episode that did not end this step."""
        self._pack(self._buffer, j * self._size, reward, 0.0, 0.0, 0, lives, raw_reward,
                   elapsed_step, 0, 0, 0, game_over, 0)

    def ended(self, j: int, *, reward: float, raw_reward: float, lives: int,
              elapsed_step: int, game_over: bool, terminated: bool, truncated: bool,
              episode_end: bool, episode_return: float, episode_time: float,
              episode_length: int) -> None:
        """Record ``j``: the episode ended this step (``done`` is set); the statistics
        count only with ``episode_end``."""
        self._pack(self._buffer, j * self._size, reward, episode_return, episode_time,
                   episode_length, lives, raw_reward, elapsed_step, terminated, truncated, 1,
                   game_over, episode_end)


ERROR_MAGIC = b"\x00shmenv-worker-error\x00"
SYNC_MAGIC = b"\x00shmenv-worker-sync\x00"


@dataclass(frozen=True)
class ErrorReport:
    """What went wrong in a worker, as sent up the pipe in place of a reply.

    ``kind``: "raised" (an exception in the worker), "died" (a relay child that vanished;
    only ``worker`` is meaningful) or "malformed" (a reply that made no sense).
    ``worker``: the index of the worker it happened in, which for a relayed step may be
    another worker than the one whose pipe carried the report. ``env``: the env whose own
    code raised (the generic worker's envs), None if no env was at fault. ``also``: the
    reports of other envs that raised in the same command before this one (the generic
    workers step every env even when one fails, as gymnasium's one-env processes do).
    """

    type_name: str
    message: str
    traceback: str
    worker: int
    kind: str = "raised"
    env: int | None = None
    also: tuple[ErrorReport, ...] = ()

    def every(self) -> tuple[ErrorReport, ...]:
        """This report and those it carries, in the order they were raised."""
        return (*self.also, self)

    @staticmethod
    def combine(reports: list[ErrorReport]) -> ErrorReport:
        """One report of several envs' errors: the last raised, carrying the others."""
        return dataclasses.replace(reports[-1], also=tuple(reports[:-1]))

    @classmethod
    def from_exception(cls, exc: BaseException, worker: int,
                       env: int | None = None) -> ErrorReport:
        """A report of ``exc``, raised in ``worker`` (by ``env``) and being handled now."""
        return cls(type(exc).__name__, str(exc), traceback.format_exc(), worker, env=env)

    @classmethod
    def died(cls, worker: int) -> ErrorReport:
        return cls("", "", "", worker, "died")

    @classmethod
    def malformed(cls, worker: int) -> ErrorReport:
        return cls("WorkerError", "malformed reply", "", worker, "malformed")

    def encode(self, reply_nbytes: int) -> bytes:
        """The report as a message longer than a reply of ``reply_nbytes``."""
        return _encode_report(self, reply_nbytes)

    @staticmethod
    def decode(payload: bytes) -> ErrorReport | None:
        """The report in ``payload``, or None if ``payload`` is not one."""
        return _decode_report(payload, ErrorReport)


@dataclass(frozen=True)
class RelayedParts:
    """The answer to a relayed :data:`OP_EACH` in which some processes failed.

    Why: drop-in Workers fail per process, as the reference's fail per Worker, so a failure
    in one part of a relayed step must not cost the other parts their replies. ``records``
    holds the whole subtree's reply rows (valid for the processes not in ``errors``);
    ``errors`` maps each failed worker to its report.
    """

    records: bytes
    errors: dict[int, ErrorReport]

    def encode(self, reply_nbytes: int) -> bytes:
        """The parts as a message longer than a reply of ``reply_nbytes``."""
        return _encode_report(self, reply_nbytes)

    @staticmethod
    def decode(payload: bytes) -> RelayedParts | None:
        """The parts in ``payload``, or None if ``payload`` is not a parts report."""
        return _decode_report(payload, RelayedParts)


_Report = TypeVar("_Report", ErrorReport, RelayedParts)


def _encode_report(report: ErrorReport | RelayedParts, reply_nbytes: int) -> bytes:
    return pad_error(ERROR_MAGIC + pickle.dumps(report), reply_nbytes)


def _decode_report(payload: bytes, kind: type[_Report]) -> _Report | None:
    if not payload.startswith(ERROR_MAGIC):
        return None
    report = pickle.loads(payload[len(ERROR_MAGIC):])  # ignores the padding
    return report if isinstance(report, kind) else None


def pad_error(encoded: bytes, reply_nbytes: int) -> bytes:
    """An encoded error report padded to be longer than a reply of ``reply_nbytes``."""
    return encoded.ljust(reply_nbytes + 1, b"\x00")


def sync_command(nonce: int) -> np.ndarray:
    """The sync request for ``nonce`` (a 31-bit int)."""
    return np.array([OP_SYNC, nonce], dtype=np.int32)


def sync_marker(command: np.ndarray | bytes) -> bytes:
    """The answer to the sync request ``command`` (an int32 array or its 8 bytes)."""
    raw = command.tobytes() if isinstance(command, np.ndarray) else command
    return SYNC_MAGIC + raw[4:8]


def is_sync_command(message: bytes) -> bool:
    return len(message) == 8 and int.from_bytes(message[:4], "little") == OP_SYNC
