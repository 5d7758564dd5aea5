"""The zero-cost game now lives in :mod:`shmenv.fakegames`; re-exported for old imports."""

from shmenv.fakegames import EPISODE_STEPS, NUM_ACTIONS, NullEnv, NullGame  # noqa: F401
