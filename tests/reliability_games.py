"""The test games now live in :mod:`shmenv.fakegames`; re-exported for bench/soak.py."""

from shmenv.fakegames import NUM_ACTIONS, CounterGame  # noqa: F401
