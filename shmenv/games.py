"""Game names -> ROMs, and the option set every game is built with.

A name only picks the ROM: ``"Breakout"``, ``"breakout"``, ``"ALE/Breakout-v5"`` and
``"BreakoutNoFrameskip-v4"`` all mean Breakout. Frame skip, sticky actions, the episode cap
and the rest come from :class:`GameOptions`, whose defaults are the labml design's values
(the PPO tutorial's ``BreakoutNoFrameskip-v4`` driven by hand).
"""

from __future__ import annotations

import difflib
import re
import warnings
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any, Literal

MaxPool = Literal["labml", "standard"]

# ROMs whose episodes do not all start alike: ALE's ``reset_game`` refills the console's RAM
# from its random generator, which moves on with every reset, and these ROMs let that show
# (in RAM, on screen or later in play). Restoring a state cloned after the first reset would
# start every episode the same way, so they always take the real ``reset_game``. Measured
# by ``bench/exact_sweep.py`` (against the reference, and forced restore against real resets)
# on every game; docs/exactness.md has the table.
REAL_RESET_ROMS: frozenset[str] = frozenset({
    "assault", "beam_rider", "berzerk", "chopper_command", "demon_attack", "elevator_action",
    "fishing_derby", "freeway", "frostbite", "hero", "ice_hockey", "private_eye", "qbert",
    "seaquest", "solaris", "tennis", "time_pilot", "yars_revenge",
})

# ROMs whose ALE grayscale screen is not OpenCV's COLOR_RGB2GRAY of their RGB screen (Air
# Raid's gray levels follow another palette): they gray the RGB screen with OpenCV, as the
# reference does, at ~80 us more per kept frame. Measured on every NoFrameskip-v4 game.
GRAY_FROM_RGB_ROMS: frozenset[str] = frozenset({"air_raid"})

_VERSION_SUFFIX = re.compile(r"-v\d+$")
_VARIANT_SUFFIX = re.compile(r"(NoFrameskip|Deterministic)$")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


class UnknownGameError(ValueError):
    """Raised for a game name that matches no ALE ROM."""


@lru_cache(maxsize=1)
def known_games() -> tuple[str, ...]:
    """All ROM ids ale-py ships, e.g. ``("adventure", ..., "breakout", ...)``."""
    from ale_py import roms

    return tuple(sorted(roms.get_all_rom_ids()))


def _squash(name: str) -> str:
    return name.replace("_", "").replace("-", "").replace(" ", "").lower()


def resolve_game(name: str) -> str:
    """Map any common spelling of an Atari game to ale-py's ROM id.

    >>> resolve_game("ALE/SpaceInvaders-v5")
    'space_invaders'
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownGameError(f"game must be a non-empty string, got {name!r}")
    stem = name.strip()
    if "/" in stem:
        stem = stem.rsplit("/", 1)[1]
    stem = _VERSION_SUFFIX.sub("", stem)
    stem = _VARIANT_SUFFIX.sub("", stem)
    by_squashed = {_squash(rom): rom for rom in known_games()}
    rom = by_squashed.get(_squash(stem))
    if rom is not None:
        return rom
    snake = _CAMEL_BOUNDARY.sub("_", stem).lower()
    close = difflib.get_close_matches(snake, known_games(), n=5, cutoff=0.5)
    hint = f" Closest known names: {', '.join(close)}." if close else ""
    raise UnknownGameError(
        f"Unknown Atari game {name!r}.{hint} "
        "See shmenv.known_games() for the full list."
    )


@dataclass(frozen=True)
class GameOptions:
    """How each game is emulated and preprocessed. Defaults are the labml design's.

    Attributes:
        frame_skip: emulator frames per agent step; the action is repeated on each.
        stack: frames in the observation stack.
        size: side of the square gray frame (OpenCV ``INTER_AREA`` resize).
        episodic_life: one life = one episode, followed by a full game reset (the labml
            design's rule). Off: episodes end at game over only.
        repeat_action_probability: ALE sticky actions (0 = deterministic, the v4 setting).
        full_action_space: use all 18 ALE actions instead of the game's minimal set.
        max_episode_frames: emulator frames after which an episode is truncated.
        maxpool: ``"labml"`` resizes each of the last two frames and takes their pixel-wise
            max (the labml design's order); ``"standard"`` takes the max of the two raw
            frames and resizes once (the DQN / gymnasium / envpool order: cheaper, different
            pixels). ``"seed"`` is a deprecated alias of ``"labml"``.
        fast_reset: allow restoring an emulator state cloned right after the first reset
            instead of calling ALE's ``reset_game`` (~0.1 ms instead of several ms), on the
            ROMs where that restore is exact (all but :data:`REAL_RESET_ROMS`, and never
            with sticky actions); the game's ``reset_kind`` says which one it uses. Turn it
            off only to measure its effect.
    """

    frame_skip: int = 4
    stack: int = 4
    size: int = 84
    episodic_life: bool = True
    repeat_action_probability: float = 0.0
    full_action_space: bool = False
    max_episode_frames: int = 108_000
    maxpool: MaxPool = "labml"
    fast_reset: bool = True

    def __post_init__(self) -> None:
        for name in ("frame_skip", "stack", "size", "max_episode_frames"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.maxpool == "seed":
            warnings.warn('maxpool="seed" is deprecated; it is now called maxpool="labml"',
                          DeprecationWarning, stacklevel=3)
            object.__setattr__(self, "maxpool", "labml")
        if self.maxpool not in ("labml", "standard"):
            raise ValueError(f"maxpool must be 'labml' or 'standard', got {self.maxpool!r}")
        if not 0.0 <= float(self.repeat_action_probability) <= 1.0:
            raise ValueError(
                "repeat_action_probability must lie in [0, 1], "
                f"got {self.repeat_action_probability!r}"
            )
        if self.repeat_action_probability > 0 and self.fast_reset:
            # Sticky actions draw from ALE's random generator, which a restore would rewind.
            object.__setattr__(self, "fast_reset", False)

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> GameOptions:
        """Build options from keyword arguments, naming any that do not exist."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise TypeError(
                f"Unknown game option(s) {unknown}; valid options are {sorted(valid)}"
            )
        return cls(**options)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        return (self.stack, self.size, self.size)
