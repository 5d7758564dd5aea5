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
from dataclasses import InitVar, asdict, dataclass, fields
from functools import lru_cache
from typing import Any, Literal

import numpy as np

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


LifeLossRule = Literal["reset_game", "end_episode", "continue"]
Seeding = Literal["gymnasium", "envpool"]
LIFE_LOSS_RULES: tuple[str, ...] = ("reset_game", "end_episode", "continue")
SEEDINGS: tuple[str, ...] = ("gymnasium", "envpool")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, "
                         f"got {value!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")


@dataclass(frozen=True)
class GameOptions:
    """How each game is emulated and preprocessed. Defaults are the labml design's.

    Attributes:
        frame_skip: emulator frames per agent step; the action is repeated on each.
        stack: frames in the observation stack.
        size: frame size after the OpenCV ``INTER_AREA`` resize: an int for a square
            frame, or ``(height, width)``.
        on_life_loss: what a lost life does. ``"reset_game"`` (default, the labml design):
            the step stops at once, the episode ends and the next one is a new game.
            ``"end_episode"`` (envpool's ``episodic_life=True``, SB3's
            ``EpisodicLifeEnv``): the episode ends after the step's frames, the game goes
            on; ``infos["episode"]`` then reports whole games. ``"continue"``: nothing,
            episodes end at game over (or a cap). ``episodic_life`` is a deprecated alias:
            ``True`` is ``"reset_game"``, ``False`` is ``"continue"``.
        repeat_action_probability: ALE sticky actions (0 = deterministic, the v4 setting).
        full_action_space: use all 18 ALE actions instead of the game's minimal set.
        max_episode_frames: emulator frames after which an episode is truncated (ALE's own
            cap); None turns it off.
        max_episode_steps: agent steps after which an episode is truncated (None: no cap).
            Under ``on_life_loss="end_episode"`` it counts the steps of the whole game, as
            envpool's cap does.
        maxpool: ``"labml"`` resizes each of the last two frames and takes their pixel-wise
            max (the labml design's order); ``"standard"`` takes the max of the two raw
            frames and resizes once (the DQN / gymnasium / envpool order: cheaper, different
            pixels). ``"seed"`` is a deprecated alias of ``"labml"``.
        fast_reset: allow restoring an emulator state cloned right after the first reset
            instead of calling ALE's ``reset_game`` (~0.1 ms instead of several ms), on the
            ROMs where that restore is exact (all but :data:`REAL_RESET_ROMS`, and never
            with sticky actions); the game's ``reset_kind`` says which one it uses. Turn it
            off only to measure its effect.
        noop_max: 0 (default): none. n >= 1: every reset plays a random number of NOOP
            frames, ``U{0..n-1} + 1`` (one fewer with ``fire_reset``), drawn from the env's
            seed exactly as envpool draws it (:mod:`shmenv.noops`).
        fire_reset: after every reset, play one FIRE frame if the game's action set has
            FIRE (as envpool's ``use_fire_reset``); nothing on games without it.
        reward_clip: the returned reward is its sign (-1, 0, 1); ``infos["reward"]``
            keeps the raw one.
        gray_scale: False gives RGB frames, stacked as envpool stacks them:
            ``(stack * 3, height, width)``, frame k in channels 3k..3k+2 (R, G, B).
        seeding: how env seed s seeds ALE: ``"gymnasium"`` (default) as gymnasium's
            ``reset(seed=s)`` does, ``"envpool"`` with s itself, as envpool does.
    """

    frame_skip: int = 4
    stack: int = 4
    size: int | tuple[int, int] = 84
    on_life_loss: LifeLossRule = "reset_game"
    repeat_action_probability: float = 0.0
    full_action_space: bool = False
    max_episode_frames: int | None = 108_000
    maxpool: MaxPool = "labml"
    fast_reset: bool = True
    noop_max: int = 0
    fire_reset: bool = False
    reward_clip: bool = False
    gray_scale: bool = True
    max_episode_steps: int | None = None
    seeding: Seeding = "gymnasium"
    episodic_life: InitVar[bool | None] = None

    def __post_init__(self, episodic_life: bool | None) -> None:
        if episodic_life is not None:
            if self.on_life_loss != "reset_game":
                raise TypeError("pass on_life_loss=... or the deprecated episodic_life=..., "
                                "not both")
            _check_bool("episodic_life", episodic_life)
            warnings.warn(
                "episodic_life is deprecated: in shmenv it meant on_life_loss='reset_game' "
                "(True) or 'continue' (False), while envpool's and gymnasium's options of "
                "that name mean something else; pass on_life_loss=... instead",
                DeprecationWarning, stacklevel=3)
            object.__setattr__(self, "on_life_loss",
                               "reset_game" if episodic_life else "continue")
        for name in ("frame_skip", "stack"):
            _check_int(name, getattr(self, name), 1)
        _check_int("noop_max", self.noop_max, 0)
        for name in ("max_episode_frames", "max_episode_steps"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, 1)
        if isinstance(self.size, (tuple, list)):
            if len(self.size) != 2:
                raise ValueError(f"size must be an int or (height, width), got {self.size!r}")
            for side in self.size:
                _check_int("size", side, 1)
            object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        else:
            _check_int("size", self.size, 1)
        _check_choice("on_life_loss", self.on_life_loss, LIFE_LOSS_RULES)
        _check_choice("seeding", self.seeding, SEEDINGS)
        for name in ("fire_reset", "reward_clip", "gray_scale", "full_action_space",
                     "fast_reset"):
            _check_bool(name, getattr(self, name))
        if self.maxpool == "seed":
            warnings.warn('maxpool="seed" is deprecated; it is now called maxpool="labml"',
                          DeprecationWarning, stacklevel=3)
            object.__setattr__(self, "maxpool", "labml")
        _check_choice("maxpool", self.maxpool, ("labml", "standard"))
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
        valid = {f.name for f in fields(cls)} | {"episodic_life"}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise TypeError(
                f"Unknown game option(s) {unknown}; valid options are {sorted(valid)}"
            )
        return cls(**options)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def height(self) -> int:
        return self.size if isinstance(self.size, int) else self.size[0]

    @property
    def width(self) -> int:
        return self.size if isinstance(self.size, int) else self.size[1]

    @property
    def channels(self) -> int:
        """Channels per stacked frame: 1 gray, 3 RGB."""
        return 1 if self.gray_scale else 3

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        return (self.stack * self.channels, self.height, self.width)

    @property
    def envpool_rules(self) -> bool:
        """Whether a game needs envpool's step rules (:mod:`shmenv.envpool_game`): the
        labml design's rules know neither a game that goes on after an ended episode nor
        RGB frames."""
        return self.on_life_loss == "end_episode" or not self.gray_scale

