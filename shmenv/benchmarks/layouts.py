"""The memory-layout suite (``shmenv bench layouts``): what each layout choice costs.

Each case compares ways of doing one job and reports the cost per env-step and the bytes
moved per env-step:

(a) getting a worker's (4, 84, 84) stack to the trainer: float64 pickled over a Pipe (the
    labml design), uint8 pickled over a Pipe, or written into shared memory with shmenv's
    command (int32 opcode and action) and reply record over the Pipe;
(b) pushing a frame onto the stack: ``np.roll`` (new array), in-place shift, or a ring
    buffer plus index (and what a consumer pays to read the ring in order);
(c) per-env reply records written by two processes: neighbours in one shared block (packed,
    padded to 64 B or to 4 KiB: false sharing) or each writer's own buffer;
(d) handing the batch to the trainer as a zero-copy view vs a copy per step;
(e) keeping uint8 vs converting to float32 for the consumer;
(f) one shared block for all workers vs one block per worker.

The sizes and offsets are shmenv's own, read from the code that defines them: the reply
record from ``REPLY_DTYPE``, the stack shape from ``GameOptions``, the block from
``shmenv.block.BlockLayout``. Each case marks the variant shmenv uses. The functions doing
each job are small and public so that tests can check they are right.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import pickle
import secrets
import struct
import time
from collections.abc import Callable
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from shmenv.benchmarks import report
from shmenv.block import NAME_PREFIX, BlockLayout
from shmenv.games import GameOptions
from shmenv.protocol import REPLY_DTYPE

STACK_SHAPE: tuple[int, int, int] = GameOptions().obs_shape
STACK_BYTES = BlockLayout(1, STACK_SHAPE).slot_bytes
FRAME_BYTES = STACK_BYTES // STACK_SHAPE[0]
COMMAND_BYTES = 2 * np.dtype(np.int32).itemsize  # shmenv's step command for one env

_STRUCT_CODES = {("f", 8): "d", ("f", 4): "f", ("i", 8): "q", ("u", 8): "Q", ("i", 4): "i",
                 ("u", 4): "I", ("i", 2): "h", ("u", 2): "H", ("i", 1): "b", ("u", 1): "B",
                 ("b", 1): "?"}


def _fields(dtype: np.dtype) -> list[tuple[str, np.dtype, int]]:
    """A structured dtype's fields as (name, dtype, offset), in offset order."""
    if dtype.fields is None:
        raise ValueError(f"{dtype} is not a structured dtype")
    fields = [(name, spec[0], spec[1]) for name, spec in dtype.fields.items()]
    return sorted(fields, key=lambda field: field[2])


def record_struct(dtype: np.dtype = REPLY_DTYPE) -> struct.Struct:
    """The ``struct`` that packs one record of ``dtype`` byte for byte (fields in offset
    order, gaps and tail as pad bytes), as a worker packs its replies."""
    fmt, at = "<", 0
    for name, field_dtype, offset in _fields(dtype):
        code = _STRUCT_CODES.get((field_dtype.kind, field_dtype.itemsize))
        if code is None or field_dtype.byteorder == ">":
            raise ValueError(f"field {name!r} has dtype {field_dtype}, which has no struct code")
        fmt += "x" * (offset - at) + code
        at = offset + field_dtype.itemsize
    fmt += "x" * (dtype.itemsize - at)
    packer = struct.Struct(fmt)
    if packer.size != dtype.itemsize:
        raise ValueError(f"{fmt!r} packs {packer.size} bytes, the dtype has {dtype.itemsize}")
    return packer


RECORD = record_struct()


def record_values(step: int, writer: int, dtype: np.dtype = REPLY_DTYPE) -> tuple:
    """The values writer ``writer`` packs at ``step``, in struct order: ``step`` in the
    first field, ``writer`` in every other one."""
    kinds = [field_dtype.kind for _name, field_dtype, _offset in _fields(dtype)]
    cast = {"f": float, "b": bool}
    return tuple(cast.get(kind, int)(value)
                 for kind, value in zip(kinds, [step] + [writer] * (len(kinds) - 1)))


def new_segment(size: int) -> shared_memory.SharedMemory:
    """A segment named as shmenv names its blocks, so leak checks see it."""
    name = f"{NAME_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
    return shared_memory.SharedMemory(name=name, create=True, size=size)


def per_call_us(fn: Callable[[], Any], seconds: float, min_calls: int = 5) -> float:
    """Median µs per call over batches of calls filling about ``seconds``."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    batch = max(1, int(seconds / 10 / once))
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < min_calls or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - t0) / batch)
    return 1e6 * float(np.median(samples))


def stamped_stack(base: np.ndarray, step: int) -> np.ndarray:
    """The stack a producer shows at ``step``: ``base`` with the step stamped in."""
    stack = base.copy()
    stack[-1, 0, :8] = np.frombuffer(np.int64(step).tobytes(), dtype=np.uint8)
    return stack


# ------------------------------------------------------------------ (a) transport
TRANSPORTS = ("float64-pickle", "uint8-pickle", "shared-memory")


def _producer(conn: Any, mode: str, base: np.ndarray, shm_name: str | None) -> None:
    shm = shared_memory.SharedMemory(name=shm_name) if shm_name else None
    stack = (np.ndarray(STACK_SHAPE, np.uint8, shm.buf) if shm else
             np.zeros(STACK_SHAPE, np.float64 if mode == "float64-pickle" else np.uint8))
    reply = bytes(RECORD.size)
    step = 0
    try:
        while conn.recv_bytes() != b"q":
            stack[...] = base
            stack[-1, 0, :8] = np.frombuffer(np.int64(step).tobytes(), dtype=np.uint8)
            if shm is not None:  # the stack is already where the trainer reads it
                conn.send_bytes(reply)
            else:
                conn.send(stack)
            step += 1
    except EOFError:
        pass
    finally:
        del stack
        if shm is not None:
            shm.close()


class Transport:
    """A producer process and this end of its Pipe; :meth:`fetch` moves one stack."""

    def __init__(self, mode: str, base: np.ndarray | None = None) -> None:
        if mode not in TRANSPORTS:
            raise ValueError(f"mode must be one of {TRANSPORTS}, got {mode!r}")
        self.mode = mode
        self._command = np.array([1, 0], np.int32).tobytes()  # [opcode, action]
        self.base = base if base is not None else np.random.default_rng(0).integers(
            0, 256, STACK_SHAPE, dtype=np.uint8)
        self._shm = None
        if mode == "shared-memory":
            self._shm = new_segment(STACK_BYTES)
            self.slot = np.ndarray(STACK_SHAPE, np.uint8, self._shm.buf)
        ctx = multiprocessing.get_context()
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_producer, daemon=True, args=(
            child, mode, self.base, self._shm.name if self._shm else None))
        self._process.start()
        child.close()

    @property
    def bytes_per_step(self) -> int:
        """Bytes through the kernel per env-step (request + reply; shared memory: shmenv's
        command and reply record, the stack's own bytes are written once, by the producer,
        and never copied)."""
        if self.mode == "shared-memory":
            return COMMAND_BYTES + RECORD.size
        dtype = np.float64 if self.mode == "float64-pickle" else np.uint8
        return 1 + len(pickle.dumps(np.zeros(STACK_SHAPE, dtype), pickle.HIGHEST_PROTOCOL))

    def fetch(self, out: np.ndarray) -> np.ndarray:
        """One env-step: ask for the next stack and make it available as uint8 in ``out``
        (pickled modes copy into ``out``, as a trainer builds its batch; shared memory
        returns the slot itself)."""
        if self._shm is not None:
            self._conn.send_bytes(self._command)
            self._conn.recv_bytes()
            return self.slot
        self._conn.send_bytes(b"s")
        out[...] = self._conn.recv()
        return out

    def close(self) -> None:
        self._conn.send_bytes(b"q")
        self._process.join(timeout=5)
        self._conn.close()
        if self._shm is not None:
            del self.slot
            self._shm.close()
            self._shm.unlink()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ (b) stack update
def push_roll(stack: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """The labml design's way: a new array rolled by one, newest frame last."""
    stack = np.roll(stack, shift=-1, axis=0)
    stack[-1] = frame
    return stack


def push_shift(stack: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """shmenv's way: shift in place (memmove of 3 frames), write the newest."""
    stack[:-1] = stack[1:]
    stack[-1] = frame
    return stack


class RingStack:
    """Frames in a ring plus the index of the oldest: a push writes one frame, but a
    consumer that wants the frames in order must reorder them (:meth:`read_ordered`)."""

    def __init__(self, first_frame: np.ndarray, depth: int = 4) -> None:
        self.frames = np.repeat(first_frame[None], depth, axis=0)
        self.oldest = 0

    def push(self, frame: np.ndarray) -> None:
        self.frames[self.oldest] = frame
        self.oldest = (self.oldest + 1) % len(self.frames)

    def read_ordered(self, out: np.ndarray) -> np.ndarray:
        depth = len(self.frames) - self.oldest
        out[:depth] = self.frames[self.oldest:]
        out[depth:] = self.frames[:self.oldest]
        return out


# ------------------------------------------------------------------ (c) false sharing
def record_offsets(num_records: int, align: int, record_bytes: int = RECORD.size) -> list[int]:
    """Byte offsets of ``num_records`` records, each starting on a multiple of ``align``
    (1 = packed)."""
    stride = -(-record_bytes // align) * align
    return [i * stride for i in range(num_records)]


def _hammer(shm_name: str, offset: int, writes: int, start: Any, result: Any,
            index: int) -> None:
    shm = shared_memory.SharedMemory(name=shm_name)
    buf = shm.buf
    assert buf is not None  # open until shm.close()
    pack = RECORD.pack_into
    rest = record_values(0, index)[1:]  # built once: the loop times the write alone
    while not start.value:
        pass
    t0 = time.perf_counter()
    for i in range(1, writes + 1):
        pack(buf, offset, i, *rest)
    result[index] = time.perf_counter() - t0
    del buf
    shm.close()


OWN_BUFFER = 0  # ``align`` for neighbour_writes: each writer packs into its own buffer


def neighbour_writes(align: int, writes: int, num_writers: int = 2) -> tuple[float, list[tuple]]:
    """``num_writers`` processes each pack ``writes`` reply records into their own record:
    all in one shared block at the offsets ``record_offsets(num_writers, align)``, or with
    ``align=OWN_BUFFER`` each in a buffer of its own (shmenv: a worker packs its envs'
    replies in its own buffer and sends them over its Pipe). Returns ns per write (median
    over writers) and the records' final contents, unpacked with ``REPLY_DTYPE``."""
    if align == OWN_BUFFER:
        segments = [new_segment(4096) for _ in range(num_writers)]
        places = [(seg, 0) for seg in segments]
    else:
        offsets = record_offsets(num_writers, align)
        segments = [new_segment(offsets[-1] + 4096)]
        places = [(segments[0], off) for off in offsets]
    try:
        ctx = multiprocessing.get_context()
        start = ctx.RawValue("b", 0)
        result = ctx.RawArray("d", num_writers)
        procs = [ctx.Process(target=_hammer, daemon=True,
                             args=(seg.name, off, writes, start, result, i))
                 for i, (seg, off) in enumerate(places)]
        for p in procs:
            p.start()
        time.sleep(0.05)
        start.value = 1
        for p in procs:
            p.join()
        records = [np.frombuffer(seg.buf, REPLY_DTYPE, count=1,  # type: ignore[arg-type]
                                 offset=off)[0].tolist()
                   for seg, off in places]
        return 1e9 * float(np.median(list(result))) / writes, records
    finally:
        for seg in segments:
            seg.close()
            seg.unlink()


# ------------------------------------------------------------------ (d), (e), (f)
def batch_view(block: np.ndarray) -> np.ndarray:
    """Zero-copy: the trainer reads the block itself (valid until the next step)."""
    return block


def batch_copy(block: np.ndarray) -> np.ndarray:
    """Copy-out: a fresh array each step, safe to keep."""
    return block.copy()


def as_float32(batch: np.ndarray) -> np.ndarray:
    """What a consumer pays to get float32 (same values, 4x the bytes)."""
    return batch.astype(np.float32)


class PerWorkerBlocks:
    """One shared-memory segment per worker, each laid out as shmenv lays out its block; a
    (num_envs, 4, 84, 84) batch for the trainer must then be assembled by concatenation (a
    copy) every step."""

    def __init__(self, num_envs: int, num_workers: int) -> None:
        bounds = np.linspace(0, num_envs, num_workers + 1).astype(int)
        self.segments = [new_segment(BlockLayout(int(b - a), STACK_SHAPE).nbytes)
                         for a, b in zip(bounds[:-1], bounds[1:])]
        self.views = [np.ndarray((int(b - a), *STACK_SHAPE), np.uint8, s.buf)
                      for s, a, b in zip(self.segments, bounds[:-1], bounds[1:])]

    def batch(self) -> np.ndarray:
        return np.concatenate(self.views)

    def close(self) -> None:
        self.views = []
        for s in self.segments:
            s.close()
            s.unlink()


class OneBlock:
    """shmenv's layout: every env's slot in one segment laid out by
    :class:`shmenv.block.BlockLayout`; the batch is a view of it."""

    def __init__(self, num_envs: int, num_workers: int) -> None:
        layout = BlockLayout(num_envs, STACK_SHAPE)
        self.segment = new_segment(layout.nbytes)
        self.obs = np.ndarray((num_envs, *STACK_SHAPE), np.uint8, self.segment.buf,
                              offset=layout.obs_offset)
        bounds = np.linspace(0, num_envs, num_workers + 1).astype(int)
        self.views = [self.obs[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def batch(self) -> np.ndarray:
        return self.obs

    def close(self) -> None:
        self.views = []
        del self.obs  # drop the view before closing the segment under it
        self.segment.close()
        self.segment.unlink()


# ------------------------------------------------------------------ the suite
def _row(case: str, variant: str, us: float, nbytes: float, note: str = "",
         shmenv: bool = False) -> dict:
    return {"case": case, "variant": variant, "us_per_env_step": us,
            "bytes_per_env_step": nbytes, "note": note, "shmenv": shmenv}


def run(num_envs: int = 8, seconds: float = 0.5) -> dict:
    rows: list[dict] = []
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (84, 84), dtype=np.uint8)
    stack = rng.integers(0, 256, STACK_SHAPE, dtype=np.uint8)

    # (a) one round trip per env-step, including the producer's side
    out = np.zeros(STACK_SHAPE, np.uint8)
    for mode in TRANSPORTS:
        with Transport(mode) as transport:
            us = per_call_us(functools.partial(transport.fetch, out), seconds)
            rows.append(_row("a", mode, us, transport.bytes_per_step,
                             "Pipe round trip incl. producer", mode == "shared-memory"))

    # (b) stack update
    holder = {"s": stack.copy()}

    def roll() -> None:
        holder["s"] = push_roll(holder["s"], frame)

    rows.append(_row("b", "np.roll (new array)", per_call_us(roll, seconds), 2 * STACK_BYTES))
    shifted = stack.copy()
    rows.append(_row("b", "in-place shift", per_call_us(lambda: push_shift(shifted, frame),
                                                        seconds), STACK_BYTES, shmenv=True))
    ring = RingStack(frame)
    rows.append(_row("b", "ring buffer push", per_call_us(lambda: ring.push(frame), seconds),
                     FRAME_BYTES, "consumer must reorder"))
    ordered = np.zeros(STACK_SHAPE, np.uint8)
    rows.append(_row("b", "ring buffer: consumer reads in order",
                     per_call_us(lambda: ring.read_ordered(ordered), seconds), STACK_BYTES,
                     "paid per read"))

    # (c) false sharing: cost per record write with a neighbour writing concurrently
    writes = 200_000
    for align, label in ((1, f"one block, packed ({RECORD.size} B records)"),
                         (64, "one block, padded to 64 B"), (4096, "one block, padded to 4 KiB"),
                         (OWN_BUFFER, "each writer's own buffer")):
        ns, _ = neighbour_writes(align, writes)
        rows.append(_row("c", label, ns / 1000, RECORD.size,
                         "2 processes, struct.pack_into per write", align == OWN_BUFFER))

    # (d) view vs copy, (e) uint8 vs float32, per env-step of a num_envs batch
    block = OneBlock(num_envs, 1)
    try:
        block.obs[...] = stack
        rows.append(_row("d", "zero-copy view", per_call_us(lambda: batch_view(block.obs),
                                                            seconds) / num_envs, 0,
                         "copy=False", shmenv=True))
        rows.append(_row("d", "copy out", per_call_us(lambda: batch_copy(block.obs),
                                                      seconds) / num_envs, STACK_BYTES,
                         "copy=True"))
        rows.append(_row("e", "uint8 kept", per_call_us(lambda: np.asarray(block.obs),
                                                        seconds) / num_envs, 0, shmenv=True))
        rows.append(_row("e", "converted to float32",
                         per_call_us(lambda: as_float32(block.obs), seconds) / num_envs,
                         STACK_BYTES + 4 * STACK_BYTES, "reads uint8, writes 4x bytes"))
    finally:
        block.close()

    # (f) one block vs one per worker: batch assembly per step, and set-up
    workers = max(2, min(num_envs, 8))
    for cls, label in ((OneBlock, "one block"), (PerWorkerBlocks, "one block per worker")):
        t0 = time.perf_counter()
        layout = cls(num_envs, workers)
        setup_ms = 1000 * (time.perf_counter() - t0)
        try:
            us = per_call_us(layout.batch, seconds) / num_envs
            nbytes = 0 if cls is OneBlock else STACK_BYTES
            segments = 1 if cls is OneBlock else workers
            rows.append(_row("f", label, us, nbytes,
                             f"{segments} segment(s), set-up {setup_ms:.2f} ms",
                             cls is OneBlock))
        finally:
            layout.close()

    return {"benchmark": "layouts", "machine": report.machine_info(),
            "config": {"num_envs": num_envs, "seconds": seconds}, "rows": rows}


CASE_TITLES = {
    "a": "(a) stack to trainer",
    "b": "(b) stack update",
    "c": "(c) neighbouring records",
    "d": "(d) batch hand-over",
    "e": "(e) consumer dtype",
    "f": "(f) blocks",
}


def tables(result: dict) -> list[report.Table]:
    rows = [[CASE_TITLES[r["case"]], r["variant"], "✓" if r.get("shmenv") else "",
             f"{r['us_per_env_step']:.3f}", f"{r['bytes_per_env_step']:,}", r["note"]]
            for r in result["rows"]]
    return [report.Table(f"Memory layouts ({result['config']['num_envs']} envs where batched)",
                         ["case", "variant", "shmenv's", "µs per env-step",
                          "bytes per env-step", "note"], rows)]


def print_result(result: dict) -> None:
    report.print_tables(tables(result))


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(10, 8))
    for ax, (case, title) in zip(axes.flat, CASE_TITLES.items()):
        rows = [r for r in result["rows"] if r["case"] == case]
        ys = list(range(len(rows)))[::-1]
        values = [r["us_per_env_step"] for r in rows]
        ax.barh(ys, values, color="#1f77b4")
        ax.set_yticks(ys, [r["variant"] + (" (shmenv)" if r.get("shmenv") else "")
                           for r in rows], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        for y, v in zip(ys, values):
            ax.text(v, y, f" {v:.3g}", va="center", fontsize=7)
        ax.margins(x=0.3)
    fig.supxlabel("µs per env-step (each panel its own scale; lower is better)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
