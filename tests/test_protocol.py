"""The wire records: a struct over some of a reply record's fields reads what numpy reads."""

from __future__ import annotations

import numpy as np
import pytest

from shmenv.protocol import REPLY_DTYPE, record_struct


def _records() -> np.ndarray:
    """Two records whose every field holds a distinct, exactly representable value."""
    records = np.zeros(2, REPLY_DTYPE)
    for k, name in enumerate(REPLY_DTYPE.names or ()):
        kind = REPLY_DTYPE.fields[name][0].kind  # type: ignore[index]
        records[name] = [k + 1, k + 2] if kind == "u" else [(k + 1) * 1.5, -(k + 2)]
    return records


@pytest.mark.parametrize("names", [
    ("reward", "episode_return", "episode_length", "done", "episode_end"),  # the drop-in's
    ("episode_end", "reward"),  # given out of record order: read in record order
    tuple(REPLY_DTYPE.names or ()),  # every field
    ("lives", "raw_reward", "terminated"),
])
def test_record_struct_reads_the_fields_numpy_reads(names):
    records = _records()
    reader = record_struct(*names)
    in_order = sorted(names, key=lambda n: REPLY_DTYPE.fields[n][1])  # type: ignore[index]
    for index, record in enumerate(records):
        values = reader.unpack_from(records.tobytes(), index * REPLY_DTYPE.itemsize)
        assert values == tuple(record[name].item() for name in in_order)
    assert reader.size <= REPLY_DTYPE.itemsize
