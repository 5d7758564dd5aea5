"""A block too large for /dev/shm: ``shmenv.make`` raises ``SharedMemorySpaceError``, an
``OSError`` with ``errno == ENOSPC`` (as docs/reliability.md says) and a ``ShmenvError``,
whose message says what was needed, what is free and what to do; nothing is left behind."""

from __future__ import annotations

import errno
import pickle

import pytest

import shmenv
from shmenv.block import BlockLayout, shm_free_bytes

pytestmark = pytest.mark.usefixtures("no_leaked_segments")


@pytest.fixture
def too_many_envs() -> int:
    """Envs whose block needs about twice the free space of /dev/shm (each env holds two
    stacks, so one env per stack's worth of free bytes)."""
    free = shm_free_bytes()
    if free is None:
        pytest.skip("the shared-memory filesystem's free space cannot be read here")
    return free // BlockLayout(1, (4, 84, 84)).slot_bytes + 1


def test_make_with_a_block_larger_than_dev_shm_raises_enospc(too_many_envs):
    with pytest.raises(shmenv.SharedMemorySpaceError) as caught:
        shmenv.make("Breakout", too_many_envs, num_workers=1)
    exc = caught.value
    assert isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    assert isinstance(exc, shmenv.ShmenvError)
    needed = BlockLayout(too_many_envs, (4, 84, 84)).nbytes
    message = str(exc)
    assert message.startswith(f"[Errno {errno.ENOSPC}] shmenv needs {needed:,} bytes"), message
    assert "is free" in message and "Use fewer envs" in message and "--shm-size" in message
    assert exc.strerror in message and "(" not in message.split("]")[0]  # no tuple's text


def test_space_error_survives_pickling(too_many_envs):
    """Ray and multiprocessing carry exceptions pickled."""
    with pytest.raises(shmenv.SharedMemorySpaceError) as caught:
        shmenv.make("Breakout", too_many_envs, num_workers=1)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is shmenv.SharedMemorySpaceError
    assert copy.errno == errno.ENOSPC and str(copy) == str(caught.value)
