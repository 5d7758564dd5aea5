"""Plot a CleanRL ``ppo_atari_envpool.py`` console log: per-game returns against agent steps,
next to random play with the same env settings.

CleanRL prints ``global_step=..., episodic_return=...`` for every game that ends (the sum of
the game's raw rewards). Random play is measured here with ``shmenv.envpool`` at CleanRL's
settings (``episodic_life=True, reward_clip=True``, envpool's defaults otherwise), counting
games and returns exactly as the script does (a done with ``info["lives"] == 0``).

    python bench/cleanrl_curve.py LOG --out docs/figures/cleanrl_breakout.png \
        [--task Breakout-v5] [--random-steps 2500] [--window 20]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

LINE = re.compile(r"global_step=(\d+), episodic_return=([-\d.]+)")


def read_log(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(global steps, returns) of every game the log reports, in order."""
    pairs = [(int(m[1]), float(m[2])) for m in LINE.finditer(path.read_text())]
    if not pairs:
        raise ValueError(f"{path} reports no game (no 'global_step=..., episodic_return=...')")
    steps, returns = zip(*pairs)
    return np.array(steps), np.array(returns)


def random_returns(task: str, steps: int, num_envs: int = 8, seed: int = 1) -> np.ndarray:
    """Per-game returns of uniformly random actions, counted as CleanRL counts them."""
    from shmenv import envpool

    env = envpool.make_gymnasium(task, num_envs=num_envs, episodic_life=True,
                                 reward_clip=True, seed=seed)
    rng = np.random.default_rng(seed)
    returns: list[float] = []
    game_return = np.zeros(num_envs)
    try:
        env.reset()
        for _ in range(steps):
            _, _, terminated, truncated, info = env.step(
                rng.integers(0, env.action_space.n, num_envs))
            game_return += info["reward"]
            over = (terminated | truncated) & (info["lives"] == 0)
            returns.extend(game_return[over].tolist())
            game_return *= 1 - info["terminated"]
    finally:
        env.close()
    return np.array(returns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--out", type=Path, default=Path("cleanrl_curve.png"))
    parser.add_argument("--task", default="Breakout-v5")
    parser.add_argument("--random-steps", type=int, default=2500,
                        help="synchronous steps of 8 envs of random play (0: skip)")
    parser.add_argument("--window", type=int, default=20,
                        help="games in the moving average (CleanRL's avg_episodic_return: 20)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, returns = read_log(args.log)
    window = min(args.window, len(returns))
    average = np.convolve(returns, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.scatter(steps, returns, s=6, alpha=0.35, label="one game")
    ax.plot(steps[window - 1:], average, color="C1", label=f"mean of the last {window} games")
    print(f"{len(returns)} games up to step {steps[-1]:,}; mean of the last {window}: "
          f"{average[-1]:.2f}; of the first {window}: {average[0]:.2f}")
    if args.random_steps:
        random = random_returns(args.task, args.random_steps)
        error = random.std(ddof=1) / np.sqrt(len(random))
        print(f"random play: {random.mean():.2f} per game (std. error {error:.2f}, "
              f"{len(random)} games)")
        ax.axhline(random.mean(), color="gray", linestyle="--",
                   label=f"random play ({random.mean():.2f})")
    ax.set_xlabel("agent steps (global_step)")
    ax.set_ylabel("game score (raw)")
    ax.set_title(f"CleanRL's PPO on {args.task} via `from shmenv import envpool`", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
