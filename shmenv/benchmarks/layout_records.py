"""Case (c) of the layout suite: reply records that two processes write side by side.

Neighbours in one shared block (packed, or padded to 64 B or to 4 KiB: false sharing) or
each writer's own buffer. The record is packed byte for byte as ``REPLY_DTYPE`` lays it
out, as a worker packs its replies: its size and offsets are read from the protocol, never
copied.
"""

from __future__ import annotations

import multiprocessing
import struct
import time
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from shmenv.benchmarks.layout_blocks import new_segment
from shmenv.protocol import REPLY_DTYPE

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
