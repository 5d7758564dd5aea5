"""Fork safety: worker processes answer only the process that started them.

A child forked from a process that owns workers inherits the owner's objects, finalizers
and multiprocessing's list of children. :class:`ForkSafe` detaches all of that in the
child (``os.register_at_fork``) and refuses every later use there with
:class:`~shmenv.errors.ForkedEnvError`, so the child never sends the parent's workers
anything and its exit leaves them running.
"""

from __future__ import annotations

import multiprocessing
import os
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from typing import Any

from shmenv.errors import ForkedEnvError


class ForkSafe:
    """Remembers the creating process and what to disown in a forked child: the
    finalizers registered through :meth:`finalize` and the ``processes`` it started."""

    def __init__(self, processes: Sequence[BaseProcess]) -> None:
        self.creator_pid = os.getpid()
        self.forked = False
        self._forked_processes = processes  # the owner's list, filled as they start
        self._finalizers: list[weakref.finalize] = []
        self._on_fork: weakref.WeakMethod | None = None
        _LIVE.add(self)

    def finalize(self, owner: object, release_owned: Callable[..., Any],
                 *args: Any) -> weakref.finalize:
        """``weakref.finalize(owner, release_owned, *args)``, the owner's one clean-up (at
        close, garbage collection or interpreter exit), detached in forked children."""
        finalizer = weakref.finalize(owner, release_owned, *args)
        self._finalizers.append(finalizer)
        return finalizer

    def set_on_fork(self, on_fork: Callable[[], None]) -> None:
        """Call the bound method ``on_fork()`` (held weakly) in a forked child, after
        :meth:`forked_away`, so the owner can refuse every later call cheaply."""
        self._on_fork = weakref.WeakMethod(on_fork)  # type: ignore[arg-type]

    def forked_away(self) -> None:
        """Disown the workers in a child forked from the process that created them
        (run by ``os.register_at_fork``; also in forked workers, where it is harmless).

        The workers answer only their creator: here the finalizers are detached, so the
        child's exit sends them nothing, and they leave multiprocessing's list of this
        process's children, whose exit handler would otherwise SIGTERM the parent's daemon
        workers and fail to join them ("can only join a child process").
        """
        self.forked = True
        for finalizer in self._finalizers:
            finalizer.detach()
        children = getattr(multiprocessing.process, "_children", None)
        if children is not None:
            for process in self._forked_processes:
                children.discard(process)
        on_fork = self._on_fork() if self._on_fork is not None else None
        if on_fork is not None:
            on_fork()

    def check_process(self, what: str = "this env") -> None:
        """Raise :class:`ForkedEnvError` if called in another process than the creator's."""
        if self.forked or os.getpid() != self.creator_pid:
            raise ForkedEnvError(
                f"{what} belongs to process {self.creator_pid} and was used from process "
                f"{os.getpid()}, forked from it: its workers answer only the process that "
                "started them, and commands from here would desync the parent's env. "
                "Create envs in the child itself (after the fork), or start child "
                "processes with the 'spawn' method (multiprocessing.get_context('spawn')).")


# Every live ForkSafe object in this process, for the fork hook below.
_LIVE: weakref.WeakSet[ForkSafe] = weakref.WeakSet()


def _disown_after_fork() -> None:
    for owner in list(_LIVE):
        owner.forked_away()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_after_fork)
