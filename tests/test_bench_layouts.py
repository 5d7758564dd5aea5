"""The memory-layout suite's functions do their jobs correctly."""

from __future__ import annotations

import numpy as np
import pytest

from shmenv.benchmarks import layouts
from shmenv.block import BlockLayout
from shmenv.games import GameOptions

try:
    from shmenv.protocol import REPLY_DTYPE
except ImportError:  # before the wire protocol had its own module
    from shmenv.worker import REPLY_DTYPE

pytestmark = pytest.mark.usefixtures("no_leaked_segments")


def test_the_suite_measures_shmenvs_own_sizes():
    assert layouts.STACK_SHAPE == GameOptions().obs_shape
    assert layouts.STACK_BYTES == BlockLayout(1, GameOptions().obs_shape).slot_bytes
    assert layouts.RECORD.size == REPLY_DTYPE.itemsize


def test_record_struct_packs_what_the_reply_dtype_reads():
    values = layouts.record_values(123, 1)
    packed = layouts.RECORD.pack(*values)
    (record,) = np.frombuffer(packed, REPLY_DTYPE)
    assert record.tolist() == values
    names = sorted(REPLY_DTYPE.names, key=lambda n: REPLY_DTYPE.fields[n][1])
    assert record[names[0]] == 123 and all(record[n] == 1 for n in names[1:])


def test_record_struct_follows_offsets_gaps_and_padding():
    dtype = np.dtype({"names": ["flag", "value"], "formats": ["u1", "<f8"],
                      "offsets": [0, 8], "itemsize": 24})
    packer = layouts.record_struct(dtype)
    assert packer.size == 24
    (record,) = np.frombuffer(packer.pack(1, 2.5), dtype)
    assert record["flag"] == 1 and record["value"] == 2.5
    with pytest.raises(ValueError, match="no struct code"):
        layouts.record_struct(np.dtype([("z", "<c16")]))


@pytest.mark.parametrize("mode", layouts.TRANSPORTS)
def test_transport_delivers_each_step_stack(mode):
    base = np.random.default_rng(1).integers(0, 256, layouts.STACK_SHAPE, dtype=np.uint8)
    out = np.zeros(layouts.STACK_SHAPE, np.uint8)
    with layouts.Transport(mode, base) as transport:
        for step in range(3):
            got = transport.fetch(out)
            assert got.dtype == np.uint8
            np.testing.assert_array_equal(got, layouts.stamped_stack(base, step))


def test_transport_bytes_per_step_order():
    sizes = {}
    for mode in layouts.TRANSPORTS:
        with layouts.Transport(mode) as transport:
            sizes[mode] = transport.bytes_per_step
    assert sizes["float64-pickle"] > 8 * layouts.STACK_BYTES
    assert layouts.STACK_BYTES < sizes["uint8-pickle"] < 2 * layouts.STACK_BYTES
    # shmenv's wire: an int32 [opcode, action] command, one reply record back
    assert sizes["shared-memory"] == 8 + REPLY_DTYPE.itemsize


def test_roll_shift_and_ring_agree():
    rng = np.random.default_rng(2)
    first = rng.integers(0, 256, (84, 84), dtype=np.uint8)
    rolled = np.repeat(first[None], 4, axis=0)
    shifted = rolled.copy()
    ring = layouts.RingStack(first)
    out = np.zeros(layouts.STACK_SHAPE, np.uint8)
    pushed = [first] * 4
    for _ in range(10):  # more pushes than the ring's depth: the index wraps
        frame = rng.integers(0, 256, (84, 84), dtype=np.uint8)
        before = rolled.copy()
        new = layouts.push_roll(rolled, frame)
        np.testing.assert_array_equal(rolled, before)  # np.roll leaves the input alone
        rolled = new
        assert layouts.push_shift(shifted, frame) is shifted  # in place
        ring.push(frame)
        pushed.append(frame)
        expected = np.stack(pushed[-4:])
        np.testing.assert_array_equal(rolled, expected)
        np.testing.assert_array_equal(shifted, expected)
        np.testing.assert_array_equal(ring.read_ordered(out), expected)


def test_record_offsets_alignment_and_no_overlap():
    size = REPLY_DTYPE.itemsize
    assert layouts.record_offsets(3, 1) == [0, size, 2 * size]
    stride = -(-size // 64) * 64
    assert layouts.record_offsets(3, 64) == [0, stride, 2 * stride]
    assert layouts.record_offsets(2, 4096) == [0, 4096]
    assert layouts.record_offsets(2, 16, record_bytes=40) == [0, 48]


@pytest.mark.parametrize("align", [1, 64, 4096, layouts.OWN_BUFFER])
def test_neighbour_writes_keep_each_record_intact(align):
    ns_per_write, records = layouts.neighbour_writes(align, writes=2000)
    assert ns_per_write > 0
    assert records == [layouts.record_values(2000, 0), layouts.record_values(2000, 1)]


def test_per_worker_blocks_assemble_the_same_batch():
    rng = np.random.default_rng(4)
    data = rng.integers(0, 256, (5, *layouts.STACK_SHAPE), dtype=np.uint8)
    one, per_worker = layouts.OneBlock(5, 2), layouts.PerWorkerBlocks(5, 2)
    try:
        assert [len(v) for v in per_worker.views] == [len(v) for v in one.views] == [2, 3]
        for layout in (one, per_worker):  # each worker writes its own envs
            start = 0
            for view in layout.views:
                view[...] = data[start:start + len(view)]
                start += len(view)
        np.testing.assert_array_equal(one.batch(), data)
        np.testing.assert_array_equal(per_worker.batch(), data)
        assert np.shares_memory(one.batch(), one.obs)
        assert one.segment.size == BlockLayout(5, layouts.STACK_SHAPE).nbytes
    finally:
        one.close()
        per_worker.close()
