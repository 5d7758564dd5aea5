"""The shared block: one ``multiprocessing.shared_memory`` segment holding every env's stack.

Layout (all offsets multiples of 64 bytes)::

    obs        (num_envs, stack, size, size) uint8   the stacks the envs write each step
    final_obs  (num_envs, stack, size, size) uint8   the last stack of an episode that just
                                                     ended (SAME_STEP autoreset's final_obs)
    progress   (num_workers, 8) int64                per worker, on its own cache line: how
                                                     many relayed steps it received and
                                                     replied to (names a hung worker), and
                                                     how many of its replies its parent read

Each env's slot is contiguous (28,224 bytes for (4, 84, 84), itself a multiple of 64, so
slots never share a cache line) and ``obs`` is one ``(num_envs, 4, 84, 84)`` array view.

Lifetime: the parent creates the segment, reserves its pages up front (so a full /dev/shm
is a clear error now, never a SIGBUS later) and unlinks the name as soon as every worker
has attached. From then on the memory lives exactly as long as the processes mapping it:
no name is left behind whichever process dies and however it dies.
"""

from __future__ import annotations

import errno
import os
import secrets
import weakref
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory

import numpy as np

from shmenv.errors import SharedMemorySpaceError

NAME_PREFIX = "shmenv_"
SHM_DIR = "/dev/shm"
_ALIGN = 64
PROGRESS_ROW_BYTES = 64  # one cache line per worker: no two workers write the same line
# A worker's progress row: relayed steps received, replied to, and (written by its relay
# parent) replies of it that the parent read. The drop-in group reads them after a relaying
# process failed, to tell which of the others' replies it can still get (shmenv.pooled_relay).
RECEIVED, REPLIED, COLLECTED = 0, 1, 2


def _align(offset: int) -> int:
    return (offset + _ALIGN - 1) // _ALIGN * _ALIGN


@dataclass(frozen=True)
class BlockLayout:
    """Where each array lives in the block."""

    num_envs: int
    obs_shape: tuple[int, int, int]
    num_workers: int = 0  # rows of `progress` (0: none; only relayed steps use them)
    # Bytes after `progress` whose layout belongs to the caller: the generic env's
    # observation, action, reward and flag regions (see shmenv.anyspaces).
    extra_bytes: int = 0

    @property
    def slot_bytes(self) -> int:
        return int(np.prod(self.obs_shape))

    @property
    def obs_offset(self) -> int:
        return 0

    @property
    def final_obs_offset(self) -> int:
        return _align(self.num_envs * self.slot_bytes)

    @property
    def progress_offset(self) -> int:
        return _align(self.final_obs_offset + self.num_envs * self.slot_bytes)

    @property
    def extra_offset(self) -> int:
        return _align(self.progress_offset + self.num_workers * PROGRESS_ROW_BYTES)

    @property
    def nbytes(self) -> int:
        if self.extra_bytes:
            return self.extra_offset + self.extra_bytes
        return self.progress_offset + self.num_workers * PROGRESS_ROW_BYTES


def shm_free_bytes(path: str = SHM_DIR) -> int | None:
    """Bytes free for an unprivileged writer on the shared-memory filesystem, if known."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def _space_error(needed: int, free: int | None) -> SharedMemorySpaceError:
    free_text = "unknown" if free is None else f"{free:,} bytes ({free / 2**20:.1f} MiB)"
    return SharedMemorySpaceError(
        f"shmenv needs {needed:,} bytes ({needed / 2**20:.1f} MiB) of shared memory in "
        f"{SHM_DIR} but only {free_text} is free. Use fewer envs, free space in {SHM_DIR}, "
        "or give the container more (Docker: --shm-size=1g; Kubernetes: an emptyDir "
        "volume with medium: Memory mounted at /dev/shm).",
    )


class SharedBlock:
    """A shared-memory segment with typed views; see the module docstring for its layout."""

    def __init__(self, shm: shared_memory.SharedMemory, layout: BlockLayout, owner: bool):
        self._shm = shm
        self.layout = layout
        self.name = shm.name
        self.owner = owner
        self._unlinked = False
        self._closed = False
        shape = (layout.num_envs, *layout.obs_shape)
        # Every array handed out is a view of ``whole``, so ``whole`` lives exactly as long
        # as the last of them. numpy holds no buffer export on ``shm.buf``, so closing the
        # SharedMemory while a view lives would unmap memory under it (a segfault on the
        # next read): the mapping is closed only once ``whole`` is gone (see close()).
        whole = np.ndarray((layout.nbytes,), np.uint8, shm.buf)
        size = layout.num_envs * layout.slot_bytes
        self.obs = whole[layout.obs_offset:layout.obs_offset + size].reshape(shape)
        self.final_obs = whole[layout.final_obs_offset:
                               layout.final_obs_offset + size].reshape(shape)
        progress_end = layout.progress_offset + layout.num_workers * PROGRESS_ROW_BYTES
        self.progress = whole[layout.progress_offset:progress_end].view(np.int64).reshape(
            layout.num_workers, PROGRESS_ROW_BYTES // 8)
        self.extra = whole[layout.extra_offset:layout.nbytes] if layout.extra_bytes else None
        # What the main process hands out: a write meant for a copy (an in-place
        # normalisation) raises instead of corrupting the env's next stacks.
        self.obs_readonly = self.obs.view()
        self.obs_readonly.flags.writeable = False
        self._unmap = weakref.finalize(whole, shm.close)
        self._unmap.atexit = False  # at exit the OS unmaps; a live view must not be cut

    @classmethod
    def create(cls, layout: BlockLayout, free_bytes: int | None = None) -> SharedBlock:
        """Create and reserve a block; raises :class:`SharedMemorySpaceError` if it cannot fit.

        ``free_bytes`` overrides the reading of the free space (for tests).
        """
        needed = layout.nbytes
        free = shm_free_bytes() if free_bytes is None else free_bytes
        if free is not None and free < needed:
            raise _space_error(needed, free)
        name = f"{NAME_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
        shm = shared_memory.SharedMemory(name=name, create=True, size=needed)
        try:
            # tmpfs allocates pages lazily; a write to a page it cannot back is a SIGBUS.
            # Reserving every page now turns that into ENOSPC here.
            os.posix_fallocate(shm._fd, 0, needed)  # type: ignore[attr-defined]
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENODEV):
                shm.close()
                shm.unlink()
                if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                    raise _space_error(needed, shm_free_bytes()) from exc
                raise
        return cls(shm, layout, owner=True)

    @classmethod
    def attach(cls, name: str, layout: BlockLayout) -> SharedBlock:
        """Map an existing block by name (in a worker).

        Only the creator registers the name with multiprocessing's resource tracker, so
        that exactly one unregister (by whoever unlinks it) can ever match it.
        """
        try:  # Python >= 3.13
            shm = shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg]
        except TypeError:
            register = resource_tracker.register
            resource_tracker.register = lambda *args, **kwargs: None
            try:
                shm = shared_memory.SharedMemory(name=name)
            finally:
                resource_tracker.register = register
        return cls(shm, layout, owner=False)

    @staticmethod
    def remove_name(name: str) -> None:
        """Remove a block's name if it still exists, from any process.

        Workers call this when the main process died before it could unlink the name
        (a kill during start-up); names are unique, so this never touches another block.
        Unlinking is atomic, so of several workers trying, exactly one succeeds, and only
        that one tells the resource tracker the name is gone.
        """
        try:
            os.unlink(os.path.join(SHM_DIR, name))
        except OSError:
            return
        try:
            resource_tracker.unregister(f"/{name}", "shared_memory")
        except Exception:  # noqa: BLE001 - the tracker may be gone with its parent
            pass

    def unlink(self) -> None:
        """Remove the block's name (owner only, at most once). Mappings stay valid."""
        if self.owner and not self._unlinked:
            self._unlinked = True
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass  # a worker removed it, believing this process dead (see remove_name)

    def close(self) -> None:
        """Unlink (if owner) and drop this object's views of the mapping.

        The mapping itself is closed when the last view goes: at once if nobody else holds
        one, else when the caller drops the ``obs`` it kept (copy=False), which stays
        readable until then.
        """
        self.unlink()
        if self._closed:
            return
        self._closed = True
        self.obs = self.final_obs = self.obs_readonly = None  # type: ignore[assignment]
        self.progress = None  # type: ignore[assignment]
        self.extra = None
