"""What a worker needs of a game: the :class:`Game` protocol.

:class:`shmenv.atari.AtariGame` implements it, and so do the games in
:mod:`shmenv.fakegames`; pass any other implementation to ``shmenv.make`` as
``game_factory``. A game writes its observation stack straight into its slot of the
shared block (``stack_out``): observations never travel through a pipe.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Game(Protocol):
    """One env inside a worker.

    Constructed as ``factory(game, seed, options, stack_out)``: ``game`` the resolved game
    name, ``seed`` an int or None, ``options`` a :class:`shmenv.games.GameOptions`,
    ``stack_out`` the env's uint8 slot of the shared block, which the game owns from then
    on. ``episode_return``/``episode_length`` describe the episode so far and are read when
    a step ends it.
    """

    @property
    def stack(self) -> np.ndarray:
        """The current observation stack (``stack_out``)."""
        ...

    @property
    def num_actions(self) -> int: ...

    @property
    def lives(self) -> int: ...

    @property
    def game_over(self) -> bool:
        """Whether the game is really over (not a lost life, not a cap)."""
        ...

    @property
    def elapsed_step(self) -> int:
        """Agent steps of the episode (of the game, when a game outlives its episodes)."""
        ...

    @property
    def episode_return(self) -> float: ...

    @property
    def episode_length(self) -> int: ...

    def step(self, action: int) -> tuple[float, bool, bool]:
        """Play ``action``; returns ``(reward, terminated, truncated)``."""
        ...

    def reset(self) -> None:
        """Start a new episode, writing its first stack into ``stack_out``. A game may
        also have ``next_episode()``, which the worker calls instead after an episode
        ended (an Atari game whose game goes on after a lost life uses it)."""
        ...

    def reseed(self, seed: int | None) -> None:
        """Take a new seed for the next ``reset``."""
        ...

    def write_final_stack(self, out: np.ndarray) -> None:
        """Write the stack of the episode that just ended into ``out``."""
        ...


class GameFactory(Protocol):
    """``game_factory``: builds one :class:`Game` per env, in the worker process."""

    def __call__(self, game: str, seed: int | None, options: Any,
                 stack_out: np.ndarray) -> Game: ...
