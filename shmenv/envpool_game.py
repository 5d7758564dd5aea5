"""One ALE emulator following envpool's Atari step and reset rules, writing into a given slot.

:class:`EnvpoolAtariGame` implements :class:`shmenv.game.Game` with the rules of envpool's
``AtariEnv`` (docs/from-envpool.md has the side-by-side with the labml design); it is what
``on_life_loss="end_episode"``, RGB frames and :mod:`shmenv.envpool` run. With the same
seeds and actions it gives envpool's observations, rewards and flags step for step
(tests/test_envpool_parity.py judges that against envpool itself). One agent step:

* repeat the action for ``frame_skip`` frames, stopping early only at a game over (a lost
  life never shortens the step); grab the last two screens (gray or RGB);
* frames all played: the pixel-wise max of the two raw screens, kept in the first buffer;
  then resize it and push it onto the stack, also on the step that ends the episode (a game
  over after 1-2 frames pushes that stale first buffer, as envpool does);
* the episode ends at a game over, at ``max_episode_steps`` agent steps of the game, or,
  unless ``on_life_loss="continue"``, when the lives fell below the previous step's (0 lives
  is a game over anyway).

A reset plays ``U{0..noop_max-1} + 1`` NOOP frames (one fewer with fire reset) and a FIRE
frame when asked. It is a new game unless the previous episode ended on a lost life under
``on_life_loss="end_episode"``: then the game goes on, the step counter keeps counting and
the stack only gets the new frame pushed.
"""

from __future__ import annotations

import cv2
import numpy as np
from ale_py import Action, ALEInterface, LoggerMode, roms

from shmenv.atari import AleFacts, ale_seed, has_fire, noop_draws, stack_slot
from shmenv.games import GameOptions, resolve_game

ALEInterface.setLoggerMode(LoggerMode.Error)

_NOOP = Action.NOOP
_FIRE = Action.FIRE


class EnvpoolAtariGame(AleFacts):
    """One Atari game with envpool's rules (see the module docstring).

    Constructing it (or :meth:`reseed`) does the seeded reset; the first :meth:`reset` after
    it returns that start, so "make, then reset" draws one no-op count, as envpool's first
    reset does. ``episode_return``/``episode_length`` describe the game (per game under
    ``on_life_loss="end_episode"``): raw rewards and agent steps.

    Args:
        game: any spelling of an ALE game name (see :func:`shmenv.games.resolve_game`).
        seed: the env's seed: seeds ALE (see ``GameOptions.seeding``) and the no-op draws.
        options: emulation and preprocessing options.
        stack_out: a C-contiguous ``options.obs_shape`` uint8 array this game owns.
    """

    def __init__(self, game: str, seed: int | None, options: GameOptions | None = None,
                 stack_out: np.ndarray | None = None) -> None:
        self.options = opts = options or GameOptions(on_life_loss="end_episode")
        self.rom = resolve_game(game)
        self.stack = stack_slot(stack_out, opts.obs_shape)
        channels = opts.channels
        # The stack as (frames, channels, height, width): frame k is one row.
        self._frames = self.stack.reshape(opts.stack, channels, opts.height, opts.width)
        self._gray = opts.gray_scale
        self._dsize = (opts.width, opts.height)
        self._labml_order = opts.maxpool == "labml"
        self._pooled = min(opts.frame_skip, 2)
        # Resized frames, height x width (x 3 for RGB): the labml order keeps one per
        # pooled screen; RGB needs one to transpose from.
        small = (opts.height, opts.width) if self._gray else (opts.height, opts.width, 3)
        self._small = np.zeros((2, *small), dtype=np.uint8)
        self._steps_cap = opts.max_episode_steps or 0
        self._end_episode = opts.on_life_loss == "end_episode"
        self._life_rule = opts.on_life_loss != "continue"

        self.ale = ale = ALEInterface()
        ale.setFloat("repeat_action_probability", float(opts.repeat_action_probability))
        ale.setInt("max_num_frames_per_episode", opts.max_episode_frames or 0)
        self.episode_return = 0.0
        self.episode_length = 0
        self._lives = 0
        self._life_lost = False
        self._seed: int | None = None
        self._start_pending = False
        self.reseed(seed)

    # ----------------------------------------------------------------- resets
    def reseed(self, seed: int | None) -> None:
        """Seed ALE and the no-op draws, (re)load the ROM and do the seeded reset."""
        if seed is not None and seed == self._seed and self._start_pending:
            return  # the emulator stands at exactly that seeded start
        opts = self.options
        ale = self.ale
        ale.setInt("random_seed", ale_seed(seed, opts.seeding))
        rom_path = roms.get_rom_path(self.rom)
        if rom_path is None:  # resolve_game() found the id, so ale-py ships the ROM
            raise FileNotFoundError(f"ale-py has no ROM file for {self.rom!r}")
        ale.loadROM(rom_path)
        self.action_set = list(ale.getLegalActionSet() if opts.full_action_space
                               else ale.getMinimalActionSet())
        self._fire = opts.fire_reset and has_fire(self.action_set)
        self._noops = noop_draws(seed, opts)
        height, width = ale.getScreenDims()
        self._screens = np.zeros((2, height, width) if self._gray else (2, height, width, 3),
                                 dtype=np.uint8)
        self._grab_screen = ale.getScreenGrayscale if self._gray else ale.getScreenRGB
        self._seed = seed
        self._new_episode(full=True)
        self._start_pending = True

    def reset(self) -> None:
        """Start a new game (an explicit reset always does)."""
        if self._start_pending:  # the seeded reset reseed() did is this one
            self._start_pending = False
            return
        self._new_episode(full=True)

    def next_episode(self) -> None:
        """Start the episode after one that just ended: the game goes on after a lost life
        under ``on_life_loss="end_episode"``; otherwise a new game."""
        self._start_pending = False
        self._new_episode(full=not (self._end_episode and self._life_lost)
                          or self.ale.game_over() or self._capped())

    def _capped(self) -> bool:
        return bool(self._steps_cap) and self.episode_length >= self._steps_cap

    def _new_episode(self, full: bool) -> None:
        ale = self.ale
        noops = (self._noops.draw() + 1 - self._fire) if self._noops is not None else 0
        if full:
            ale.reset_game()
            self.episode_return = 0.0
            self.episode_length = 0
        for _ in range(noops):
            ale.act(_NOOP)
            if ale.game_over():
                ale.reset_game()
                full = True
        if self._fire:
            ale.act(_FIRE)  # no game-over check after it, as envpool
        self._grab(0)
        self._push(refill=full, pool=False)
        self._lives = ale.lives()
        self._life_lost = False

    # ----------------------------------------------------------------- the step
    def step(self, action: int) -> tuple[float, bool, bool]:
        """Play one agent step; returns ``(reward, terminated, truncated)``. The newest
        frame is pushed onto the stack whether or not the episode ended."""
        self._start_pending = False
        ale = self.ale
        ale_action = self.action_set[action]
        pooled = self._pooled
        reward = 0.0
        over = False
        left = self.options.frame_skip
        while left > 0 and not over:
            reward += ale.act(ale_action)
            over = ale.game_over()
            if left <= pooled:
                self._grab(pooled - left)
            left -= 1
        self._push(refill=False, pool=pooled == 2 and left == 0)
        self.episode_return += reward
        self.episode_length += 1
        capped = self._capped()
        lives = ale.lives()
        self._life_lost = self._life_rule and 0 < lives < self._lives
        self._lives = lives
        if not (over or capped or self._life_lost):
            return reward, False, False
        # A cap wins over a game over on the same step (envpool: truncated, not terminated);
        # ALE's own frame cap is a truncation too.
        truncated = capped or not (self._life_lost or ale.game_over(with_truncation=False))
        return reward, not truncated, truncated

    def _grab(self, index: int) -> None:
        self._grab_screen(self._screens[index])
        if self._labml_order:
            cv2.resize(self._screens[index], self._dsize, dst=self._small[index],
                       interpolation=cv2.INTER_AREA)

    def _push(self, refill: bool, pool: bool) -> None:
        """Push the newest frame (pooled if ``pool``) onto the stack; ``refill``: every
        stack slot gets it. The max is kept in the first buffer, as envpool keeps it."""
        first = self._small[0] if self._labml_order else self._screens[0]
        second = self._small[1] if self._labml_order else self._screens[1]
        if pool:
            np.maximum(first, second, out=first)
        frames = self._frames
        frames[:-1] = frames[1:]
        newest = frames[-1]
        if self._gray:
            if self._labml_order:
                newest[0] = first
            else:
                cv2.resize(first, self._dsize, dst=newest[0], interpolation=cv2.INTER_AREA)
        else:
            if not self._labml_order:
                first = cv2.resize(first, self._dsize, dst=self._small[1],
                                   interpolation=cv2.INTER_AREA)
            newest[:] = first.transpose(2, 0, 1)
        if refill:
            frames[:-1] = newest

    def write_final_stack(self, out: np.ndarray) -> None:
        """The ended episode's last stack is the current one: the done step pushed it."""
        if out is not self.stack:
            out[:] = self.stack
