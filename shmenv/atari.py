"""One ALE emulator plus the labml design's preprocessing, writing its stack into a given slot.

This is the per-env hot path. :class:`AtariGame` never allocates per step: the gray frames,
their 84x84 versions and the stack itself are preallocated, and the stack is a view the
caller owns (in shmenv, a slot of the shared block).

The labml design (docs/exactness.md) for one agent step with the defaults:

* repeat the action for 4 emulator frames, summing raw rewards;
* on the last two frames, gray (ALE's own grayscale, bit-identical to OpenCV's
  ``COLOR_RGB2GRAY`` of the RGB screen on every ROM but those in ``GRAY_FROM_RGB_ROMS``,
  which take the RGB screen and OpenCV) and resize to 84x84 with ``INTER_AREA``, keeping both;
* after each frame: a life lost since the last reset, a game over or the episode cap ends
  the step at once (done);
* not done: push the pixel-wise max of the two kept frames onto the stack (newest last).

Resets are counted as the reference counts them: ALE's random generator moves on with every
``reset_game()``, so one reset too many changes how later episodes start on some ROMs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from ale_py import Action, ALEInterface, ALEState, LoggerMode, roms

from shmenv.games import (
    GRAY_FROM_RGB_ROMS,
    REAL_RESET_ROMS,
    GameOptions,
    UnknownGameError,
    resolve_game,
)
from shmenv.noops import NoopDraws

_NOOP = Action.NOOP
_FIRE = Action.FIRE

ResetKind = Literal["restore", "reset_game"]

# Where the emulator stands relative to the seeded start (the reset done by reseed()).
_START_PENDING = 0  # at the seeded start, and the next reset() is that very reset
_AT_START = 1  # at the seeded start, already claimed by a reset(): the next one is real
_MOVED = 2  # stepped or reset since: the seeded start is gone

ALEInterface.setLoggerMode(LoggerMode.Error)


def ale_seed_for(seed: int | None) -> int:
    """The ALE ``random_seed`` gymnasium's ``AtariEnv.reset(seed=seed)`` would set.

    gymnasium splits ``SeedSequence(seed)`` into a numpy seed and an ALE seed; matching it
    makes env i with seed s emulate exactly like ``gym.make(...).reset(seed=s)``.
    """
    _np_seed, ale_seed = np.random.SeedSequence(seed).generate_state(n_words=2)
    return int(np.int32(ale_seed))


def ale_seed(seed: int | None, seeding: str) -> int:
    """ALE's ``random_seed`` for env seed ``seed``: as gymnasium sets it (``"gymnasium"``,
    :func:`ale_seed_for`) or the seed itself, as envpool sets it (``"envpool"``)."""
    if seeding == "envpool":
        return int(np.int32(fresh_seed() if seed is None else seed))
    return ale_seed_for(seed)


def fresh_seed() -> int:
    """A seed from fresh entropy, for an unseeded env's no-op draws."""
    return int(np.random.SeedSequence().generate_state(1)[0])


def noop_draws(seed: int | None, options: GameOptions) -> NoopDraws | None:
    """The env's no-op counts (None when ``noop_max`` is 0), drawn from its seed."""
    if options.noop_max < 1:
        return None
    return NoopDraws(fresh_seed() if seed is None else seed, options.noop_max)


def has_fire(action_set: list) -> bool:
    """Whether ALE action 1 (FIRE) is in ``action_set``, as envpool's fire reset asks."""
    return _FIRE in action_set



def _rom_path(rom: str) -> Path:
    """The ROM file ale-py ships for ``rom`` (a resolved ROM id)."""
    path = roms.get_rom_path(rom)
    if path is None:
        raise UnknownGameError(f"ale-py ships no ROM file for {rom!r}")
    return path



def stack_slot(stack_out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """The array a game writes its stack into: ``stack_out`` (a slot of the shared block)
    once checked, or a new one."""
    if stack_out is None:
        return np.zeros(shape, dtype=np.uint8)
    if stack_out.shape != shape or stack_out.dtype != np.uint8:
        raise ValueError(f"stack_out must be a {shape} uint8 array, got {stack_out.shape}"
                         f" {stack_out.dtype}")
    if not stack_out.flags.c_contiguous:
        raise ValueError("stack_out must be C-contiguous")
    return stack_out

class AleFacts:
    """What a worker reads of a game, the same for both Atari rule sets: the subclass sets
    ``ale``, ``action_set`` and ``episode_length``."""

    ale: ALEInterface
    action_set: list[Action]
    episode_length: int

    @property
    def num_actions(self) -> int:
        return len(self.action_set)

    @property
    def lives(self) -> int:
        return self.ale.lives()

    @property
    def game_over(self) -> bool:
        """Whether the game is really over (not a lost life, not a cap)."""
        return self.ale.game_over(with_truncation=False)

    @property
    def elapsed_step(self) -> int:
        """Agent steps of the episode so far (of the game, under envpool's rules, where a
        lost life ends an episode but not the game)."""
        return self.episode_length

class AtariGame(AleFacts):
    """One Atari game with the labml design's preprocessing, writing into ``stack_out``.

    Constructing the game (or :meth:`reseed`) does the seeded reset, as gymnasium's
    ``reset(seed=...)`` does; the first :meth:`reset` after it returns that start without
    touching the emulator, so "make, then reset" costs one ``reset_game()``, as the
    reference's "construct, then reset" does. Every later :meth:`reset` is a real one.

    Args:
        game: any spelling of an ALE game name (see :func:`shmenv.games.resolve_game`).
        seed: seeds ALE once, as gymnasium's ``reset(seed=...)`` does; never re-seeded.
        options: emulation and preprocessing options; defaults are the labml design's.
        stack_out: a C-contiguous ``options.obs_shape`` uint8 array this game owns and
            writes in place; a new one is allocated when omitted.
    """

    def __init__(
        self,
        game: str,
        seed: int | None,
        options: GameOptions | None = None,
        stack_out: np.ndarray | None = None,
    ) -> None:
        self.options = opts = options or GameOptions()
        self.rom = resolve_game(game)
        self.stack = stack_slot(stack_out, opts.obs_shape)

        self.ale = ale = ALEInterface()
        ale.setFloat("repeat_action_probability", float(opts.repeat_action_probability))
        ale.setInt("max_num_frames_per_episode", opts.max_episode_frames or 0)
        if not opts.gray_scale or opts.on_life_loss == "end_episode":
            raise ValueError("AtariGame follows the labml design: gray frames and "
                             "on_life_loss 'reset_game' or 'continue'; use "
                             "shmenv.envpool_game.EnvpoolAtariGame for these options")
        frame = (opts.height, opts.width)
        self._dsize = (opts.width, opts.height)
        self._first_kept = max(opts.frame_skip - 2, 0)
        self._small = np.zeros((2, *frame), dtype=np.uint8)
        self._start_frame = np.zeros(frame, dtype=np.uint8)
        self._steps_cap = opts.max_episode_steps or 0
        self._noops: NoopDraws | None = None
        self._fire = False
        self._start_state: ALEState | None = None
        self.episode_return = 0.0
        self.episode_length = 0
        self._lives_at_reset = 0
        self._seed: int | None = None
        self._start = _MOVED
        self.reseed(seed)

    @property
    def reset_kind(self) -> ResetKind:
        """How :meth:`reset` starts an episode: ``"restore"`` (the state cloned after the
        seeded reset, ~0.1 ms; only where that is exactly what ``reset_game()`` reaches) or
        ``"reset_game"`` (ALE's real reset)."""
        return "restore" if self._start_state is not None else "reset_game"

    def _restore_is_exact(self) -> bool:
        """Whether restoring the seeded start state reaches what ``reset_game()`` would.

        Not for sticky actions (they draw from ALE's random generator, which a restore
        leaves behind) nor for :data:`shmenv.games.REAL_RESET_ROMS`, measured against the
        reference by ``bench/exact_sweep.py``.
        """
        opts = self.options
        return (opts.fast_reset and opts.repeat_action_probability == 0
                and self.rom not in REAL_RESET_ROMS)

    def reseed(self, seed: int | None) -> None:
        """Seed ALE and (re)load the ROM, then reset, as gymnasium's ``reset(seed=...)`` does
        (~190 ms). The next :meth:`reset` returns this start (see the class docstring).

        Reseeding with the seed in use while the emulator still stands at its seeded start
        (``make(seed=s)`` then ``reset(seed=s)``) changes nothing in the emulator: a reload
        would reach that very state, random generator included, at the price of a second
        ROM load per env at start-up.
        """
        if seed is not None and seed == self._seed and self._start != _MOVED:
            self._after_reset(self._start_frame)
            self._start = _START_PENDING
            return
        ale = self.ale
        ale.setInt("random_seed", ale_seed(seed, self.options.seeding))
        ale.loadROM(_rom_path(self.rom))
        action_set = (ale.getLegalActionSet() if self.options.full_action_space
                      else ale.getMinimalActionSet())
        self.action_set = list(action_set)
        self._noops = noop_draws(seed, self.options)
        self._fire = self.options.fire_reset and has_fire(self.action_set)
        height, width = ale.getScreenDims()
        self._gray = np.zeros((2, height, width), dtype=np.uint8)
        self._grab_gray: Callable[[np.ndarray], object] = ale.getScreenGrayscale
        if self.rom in GRAY_FROM_RGB_ROMS:
            self._rgb = np.zeros((height, width, 3), dtype=np.uint8)
            self._grab_gray = self._gray_from_rgb
        ale.reset_game()
        self._start_state = ale.cloneState() if self._restore_is_exact() else None
        self._after_reset(self._preprocess_screen(self._start_frame))
        self._seed = seed
        self._start = _START_PENDING

    def _gray_from_rgb(self, out: np.ndarray) -> None:
        """The reference's gray (OpenCV's of the RGB screen), where ALE's own differs."""
        self.ale.getScreenRGB(self._rgb)
        cv2.cvtColor(self._rgb, cv2.COLOR_RGB2GRAY, dst=out)

    def _preprocess_screen(self, out: np.ndarray) -> np.ndarray:
        """Gray the current screen and resize it into ``out``."""
        self._grab_gray(self._gray[0])
        cv2.resize(self._gray[0], self._dsize, dst=out, interpolation=cv2.INTER_AREA)
        return out

    def _after_reset(self, first_frame: np.ndarray) -> None:
        self.stack[:] = first_frame
        self.episode_return = 0.0
        self.episode_length = 0
        self._lives_at_reset = self.ale.lives()

    def reset(self) -> None:
        """Start a new episode and fill every stack slot with its first frame."""
        if self._start == _START_PENDING:  # the seeded reset already done by reseed()
            self._start = _AT_START
            self._after_reset(self._start_frame)
        elif self._start_state is not None:
            # On this ROM reset_game() always reaches the same state; restoring it is ~50x
            # cheaper. The screen is not part of the state: reuse the frame kept at the start.
            self._start = _MOVED
            self.ale.restoreState(self._start_state)
            self._after_reset(self._start_frame)
        else:
            self._start = _MOVED
            self.ale.reset_game()
            self._after_reset(self._preprocess_screen(self._small[0]))
        if self._noops is not None or self._fire:
            self._start_moves()

    next_episode = reset  # after a lost life the labml design starts a new game too

    def _start_moves(self) -> None:
        """The random no-ops and the FIRE frame that start each episode (rewards dropped),
        as envpool plays them; the stack is refilled with the frame they end on."""
        ale = self.ale
        noops = (self._noops.draw() + 1 - self._fire) if self._noops is not None else 0
        moved = False
        for _ in range(noops):
            moved = True
            ale.act(_NOOP)
            if ale.game_over():
                ale.reset_game()
        if self._fire:
            moved = True
            ale.act(_FIRE)
        if moved:
            self._start = _MOVED
            self._after_reset(self._preprocess_screen(self._small[0]))

    def step(self, action: int) -> tuple[float, bool, bool]:
        """Play one agent step; returns ``(reward, terminated, truncated)``.

        Not done: the pooled frame is pushed onto the stack. Done: the stack is left as it
        was (the reference discards the frames of a lost life); call :meth:`reset` or
        :meth:`write_final_stack` next.
        """
        ale = self.ale
        opts = self.options
        ale_action = self.action_set[action]
        self._start = _MOVED
        episodic_life = opts.on_life_loss == "reset_game"
        lives_at_reset = self._lives_at_reset
        first_kept = self._first_kept
        grab_gray = self._grab_gray
        reward = 0.0
        done = False
        for frame in range(opts.frame_skip):
            reward += ale.act(ale_action)
            if frame >= first_kept:
                kept = frame - first_kept
                grab_gray(self._gray[kept])
                if opts.maxpool == "labml":
                    cv2.resize(self._gray[kept], self._dsize, dst=self._small[kept],
                               interpolation=cv2.INTER_AREA)
            if ale.game_over() or (episodic_life and ale.lives() < lives_at_reset):
                done = True
                break
        self.episode_return += reward
        self.episode_length += 1
        if done:
            terminated = ale.game_over(with_truncation=False) or (
                episodic_life and ale.lives() < lives_at_reset
            )
            return reward, terminated, not terminated
        if self._steps_cap and self.episode_length >= self._steps_cap:
            return reward, False, True  # the agent-step cap: done, the stack left as is
        self._push_pooled_frame()
        return reward, False, False

    def _push_pooled_frame(self) -> None:
        stack = self.stack
        stack[:-1] = stack[1:]
        newest = stack[-1]
        if self._first_kept == self.options.frame_skip - 1:  # frame_skip 1: one kept frame
            if self.options.maxpool == "labml":
                newest[:] = self._small[0]
            else:
                cv2.resize(self._gray[0], self._dsize, dst=newest, interpolation=cv2.INTER_AREA)
        elif self.options.maxpool == "labml":
            np.maximum(self._small[0], self._small[1], out=newest)
        else:
            np.maximum(self._gray[0], self._gray[1], out=self._gray[0])
            cv2.resize(self._gray[0], self._dsize, dst=newest, interpolation=cv2.INTER_AREA)

    def write_final_stack(self, out: np.ndarray) -> None:
        """Write the stack the ended episode would show next: the current stack shifted,
        with the current screen (gray, resized) as the newest frame.

        The reference never shows this stack; gymnasium users get it as ``final_obs`` for
        bootstrapping truncated episodes.
        """
        out[:-1] = self.stack[1:]
        self._preprocess_screen(out[-1])
