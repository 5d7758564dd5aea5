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
``shmenv.block.BlockLayout``. Each case marks the variant shmenv uses. This module runs the
cases and reports them; the functions doing each job live in one module per case
(:mod:`layout_transport`, :mod:`layout_stack`, :mod:`layout_records`,
:mod:`layout_blocks`), small and public so that tests can check they are right, and are
importable from here too.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from shmenv.benchmarks import report
from shmenv.benchmarks.layout_blocks import (
    OneBlock,
    PerWorkerBlocks,
    as_float32,
    batch_copy,
    batch_view,
    new_segment,
)
from shmenv.benchmarks.layout_records import (
    OWN_BUFFER,
    RECORD,
    neighbour_writes,
    record_offsets,
    record_struct,
    record_values,
)
from shmenv.benchmarks.layout_stack import (
    FRAME_BYTES,
    STACK_BYTES,
    STACK_SHAPE,
    RingStack,
    push_roll,
    push_shift,
)
from shmenv.benchmarks.layout_transport import (
    COMMAND_BYTES,
    TRANSPORTS,
    Transport,
    stamped_stack,
)

__all__ = ["COMMAND_BYTES", "CASE_TITLES", "FRAME_BYTES", "OWN_BUFFER", "RECORD", "STACK_BYTES",
           "STACK_SHAPE", "TRANSPORTS", "OneBlock", "PerWorkerBlocks", "RingStack",
           "Transport", "as_float32", "batch_copy", "batch_view", "neighbour_writes",
           "new_segment", "per_call_us", "plot", "print_result", "push_roll", "push_shift",
           "record_offsets", "record_struct", "record_values", "run", "stamped_stack",
           "tables"]


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
