"""The memory-layout suite's functions do their jobs correctly."""

from __future__ import annotations

import os

import numpy as np
import pytest

from shmenv.benchmarks import layouts


def _shm_entries() -> set[str]:
    return set(os.listdir("/dev/shm"))


@pytest.fixture
def no_leaked_shm():
    before = _shm_entries()
    yield
    assert _shm_entries() - before == set()


@pytest.mark.parametrize("mode", layouts.TRANSPORTS)
def test_transport_delivers_each_step_stack(mode, no_leaked_shm):
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
    assert sizes["shared-memory"] < 16


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
    assert layouts.record_offsets(3, 1) == [0, 28, 56]
    assert layouts.record_offsets(3, 64) == [0, 64, 128]
    assert layouts.record_offsets(2, 4096) == [0, 4096]
    assert layouts.record_offsets(2, 16, record_bytes=40) == [0, 48]


@pytest.mark.parametrize("align", [1, 64, 4096])
def test_neighbour_writes_keep_each_record_intact(align, no_leaked_shm):
    ns_per_write, records = layouts.neighbour_writes(align, writes=2000)
    assert ns_per_write > 0
    assert records == [(2000.0, 0.0, 2000, 0, 0, 0, 0), (2000.0, 0.0, 2000, 1, 0, 0, 0)]


def test_view_shares_memory_and_copy_does_not():
    block = np.arange(2 * 4 * 84 * 84, dtype=np.uint32).astype(np.uint8).reshape(
        2, *layouts.STACK_SHAPE)
    view, copy = layouts.batch_view(block), layouts.batch_copy(block)
    np.testing.assert_array_equal(view, block)
    np.testing.assert_array_equal(copy, block)
    block[0, 0, 0, 0] ^= 0xFF
    assert view[0, 0, 0, 0] == block[0, 0, 0, 0]
    assert copy[0, 0, 0, 0] != block[0, 0, 0, 0]


def test_float32_conversion_keeps_values():
    batch = np.random.default_rng(3).integers(0, 256, (2, *layouts.STACK_SHAPE), dtype=np.uint8)
    converted = layouts.as_float32(batch)
    assert converted.dtype == np.float32 and converted.nbytes == 4 * batch.nbytes
    np.testing.assert_array_equal(converted, batch)


def test_per_worker_blocks_assemble_the_same_batch(no_leaked_shm):
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
    finally:
        one.close()
        per_worker.close()
