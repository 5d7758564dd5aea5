"""PPO on Atari Breakout, CPU only, with shmenv's drop-in ``Worker``.

The shape follows the well-known annotated PPO tutorial this project started from: a
``Model`` (a small CNN with a policy head and a value head), a ``Trainer`` that samples
``worker_steps`` steps from ``n_workers`` games, computes GAE advantages, and runs a few
epochs of clipped-objective updates. The only shmenv-specific line is the import of
``Worker``: observations arrive through shared memory as uint8 stacks, not pickled float64.

Episodes are the labml design's: one life = one episode, then a full game reset. Rewards are the
raw game score (not clipped).

    pip install -e ".[examples]"
    python examples/ppo_breakout.py --updates 160 --minutes 21 --random-episodes 500 \\
        --csv runs/breakout.csv --plot runs/breakout.png
    python examples/ppo_breakout.py --updates 0 --random-episodes 500   # random play only

The learning curve, the figures and the exact command of a run on a 2-core machine are in
docs/examples.md.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from shmenv import Worker
from shmenv.atari import AtariGame


class Model(nn.Module):
    """The 2013 DQN convolutions (16 and 32 filters), a 256-unit layer, then policy logits
    and a value. The tutorial uses the larger Nature-DQN network; this one costs a quarter
    of the CPU time per sample, which is what decides how much a 2-core machine learns in
    twenty minutes."""

    def __init__(self, num_actions: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 16, kernel_size=8, stride=4)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=4, stride=2)
        self.lin = nn.Linear(9 * 9 * 32, 256)
        self.pi_logits = nn.Linear(256, num_actions)
        self.value = nn.Linear(256, 1)
        # Small policy head: the first policy is near uniform, as PPO expects.
        nn.init.orthogonal_(self.pi_logits.weight, gain=0.01)
        nn.init.zeros_(self.pi_logits.bias)

    def forward(self, obs: torch.Tensor) -> tuple[Categorical, torch.Tensor]:
        h = torch.relu(self.conv1(obs))
        h = torch.relu(self.conv2(h))
        h = torch.relu(self.lin(h.flatten(1)))
        return Categorical(logits=self.pi_logits(h)), self.value(h).squeeze(-1)


def num_actions(game: str) -> int:
    """The game's minimal action set size (4 for Breakout, 6 for Pong)."""
    return AtariGame(game, seed=0).num_actions


def obs_to_torch(obs: np.ndarray) -> torch.Tensor:
    """uint8 stacks [0, 255] -> float tensor [0, 1]."""
    return torch.from_numpy(obs).float().div_(255.0)


class Trainer:
    """Samples from the workers, computes advantages and trains the model."""

    def __init__(self, *, n_workers: int = 8, worker_steps: int = 128, epochs: int = 3,
                 batches: int = 4, learning_rate: float = 2.5e-4, clip_range: float = 0.1,
                 gamma: float = 0.99, lamda: float = 0.95, value_coef: float = 0.5,
                 entropy_coef: float = 0.01, game: str = "Breakout", seed: int = 47) -> None:
        self.n_workers, self.worker_steps = n_workers, worker_steps
        self.epochs, self.batches = epochs, batches
        self.batch_size = n_workers * worker_steps
        self.learning_rate, self.clip_range = learning_rate, clip_range
        self.gamma, self.lamda = gamma, lamda
        self.value_coef, self.entropy_coef = value_coef, entropy_coef
        torch.manual_seed(seed)

        # The seed tutorial's loop, unchanged except for where Worker comes from.
        self.workers = [Worker(seed + i, game=game) for i in range(n_workers)]
        self.obs = np.zeros((n_workers, 4, 84, 84), dtype=np.uint8)
        for worker in self.workers:
            worker.child.send(("reset", None))
        for i, worker in enumerate(self.workers):
            self.obs[i] = worker.child.recv()

        self.model = Model(num_actions(game))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate, eps=1e-5)
        self.episode_rewards: deque[float] = deque(maxlen=100)
        self.episodes = 0

    def sample(self) -> dict[str, torch.Tensor]:
        """Play ``worker_steps`` steps in every worker with the current policy."""
        n, t_max = self.n_workers, self.worker_steps
        rewards = np.zeros((n, t_max), dtype=np.float32)
        actions = np.zeros((n, t_max), dtype=np.int64)
        done = np.zeros((n, t_max), dtype=bool)
        obs = np.zeros((n, t_max, 4, 84, 84), dtype=np.uint8)
        log_pis = np.zeros((n, t_max), dtype=np.float32)
        values = np.zeros((n, t_max + 1), dtype=np.float32)

        with torch.no_grad():
            for t in range(t_max):
                obs[:, t] = self.obs
                pi, v = self.model(obs_to_torch(self.obs))
                a = pi.sample()
                values[:, t] = v.numpy()
                actions[:, t] = a.numpy()
                log_pis[:, t] = pi.log_prob(a).numpy()
                for w, worker in enumerate(self.workers):
                    worker.child.send(("step", int(actions[w, t])))
                for w, worker in enumerate(self.workers):
                    self.obs[w], rewards[w, t], done[w, t], info = worker.child.recv()
                    if info is not None:
                        self.episode_rewards.append(info["reward"])
                        self.episodes += 1
            _, v = self.model(obs_to_torch(self.obs))
            values[:, t_max] = v.numpy()

        advantages = self._gae(done, rewards, values)
        samples = {"obs": obs, "actions": actions, "values": values[:, :-1],
                   "log_pis": log_pis, "advantages": advantages}
        return {k: torch.from_numpy(v.reshape(n * t_max, *v.shape[2:]))
                for k, v in samples.items()}

    def _gae(self, done: np.ndarray, rewards: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Generalised advantage estimation, backwards through the sampled steps."""
        advantages = np.zeros_like(rewards)
        last_advantage = np.zeros(self.n_workers, dtype=np.float32)
        for t in reversed(range(self.worker_steps)):
            mask = 1.0 - done[:, t]
            delta = rewards[:, t] + self.gamma * values[:, t + 1] * mask - values[:, t]
            last_advantage = delta + self.gamma * self.lamda * mask * last_advantage
            advantages[:, t] = last_advantage
        return advantages

    def train(self, samples: dict[str, torch.Tensor], learning_rate: float,
              clip_range: float) -> dict[str, float]:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        mini_batch = self.batch_size // self.batches
        stats = []
        for _ in range(self.epochs):
            order = torch.randperm(self.batch_size)
            for start in range(0, self.batch_size, mini_batch):
                idx = order[start:start + mini_batch]
                stats.append(self._loss_step({k: v[idx] for k, v in samples.items()},
                                             clip_range))
        return {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}

    def _loss_step(self, batch: dict[str, torch.Tensor], clip_range: float) -> dict[str, float]:
        returns = batch["values"] + batch["advantages"]
        adv = batch["advantages"]
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pi, value = self.model(obs_to_torch(batch["obs"].numpy()))
        log_pi = pi.log_prob(batch["actions"])
        ratio = torch.exp(log_pi - batch["log_pis"])
        clipped = ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
        policy_loss = -torch.min(ratio * adv, clipped * adv).mean()
        # Clipped value loss, as in the tutorial: the value may move by clip_range only.
        value_clipped = batch["values"] + (value - batch["values"]).clamp(-clip_range,
                                                                          clip_range)
        value_loss = 0.5 * torch.max((value - returns) ** 2,
                                     (value_clipped - returns) ** 2).mean()
        entropy = pi.entropy().mean()
        loss = policy_loss + self.value_coef * value_loss - self.entropy_coef * entropy
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=0.5)
        self.optimizer.step()
        return {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
                "entropy": entropy.item()}

    def run_training_loop(self, updates: int, minutes: float | None,
                          csv_path: Path | None) -> None:
        writer = None
        if csv_path is not None:
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            handle = csv_path.open("w", newline="")
            writer = csv.writer(handle)
            writer.writerow(["update", "env_steps", "seconds", "episodes",
                             "mean_reward_100", "entropy"])
        start = time.perf_counter()
        for update in range(1, updates + 1):
            progress = 1.0 - (update - 1) / updates
            samples = self.sample()
            stats = self.train(samples, self.learning_rate * progress,
                               self.clip_range * progress)
            elapsed = time.perf_counter() - start
            mean_reward = (float(np.mean(self.episode_rewards)) if self.episode_rewards
                           else float("nan"))
            steps = update * self.batch_size
            print(f"update {update:5d}  steps {steps:8d}  {steps / elapsed:6.0f} steps/s  "
                  f"episodes {self.episodes:6d}  reward(100) {mean_reward:6.2f}  "
                  f"entropy {stats['entropy']:.3f}", flush=True)
            if writer is not None:
                writer.writerow([update, steps, round(elapsed, 1), self.episodes,
                                 round(mean_reward, 4), round(stats["entropy"], 4)])
                handle.flush()
            if minutes is not None and elapsed > minutes * 60:
                print(f"time budget of {minutes} min reached", flush=True)
                break
        if writer is not None:
            handle.close()

    def destroy(self) -> None:
        for worker in self.workers:
            worker.child.send(("close", None))


def random_baseline(episodes: int, game: str, n_workers: int = 8, seed: int = 1000) -> float:
    """Mean episode reward of uniformly random actions, same episodes as training."""
    rng = np.random.default_rng(seed)
    workers = [Worker(seed + i, game=game) for i in range(n_workers)]
    for worker in workers:
        worker.child.send(("reset", None))
    for worker in workers:
        worker.child.recv()
    actions = num_actions(game)
    returns: list[float] = []
    while len(returns) < episodes:
        for worker in workers:
            worker.child.send(("step", int(rng.integers(actions))))
        for worker in workers:
            _, _, _, info = worker.child.recv()
            if info is not None:
                returns.append(info["reward"])
    for worker in workers:
        worker.child.send(("close", None))
    mean = float(np.mean(returns))
    print(f"random play, {len(returns)} episodes: mean reward {mean:.3f} "
          f"(std err {np.std(returns) / np.sqrt(len(returns)):.3f})")
    return mean


def plot_curve(csv_path: Path, png_path: Path, random_reward: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["mean_reward_100"] != "nan"]
    steps = [int(r["env_steps"]) for r in rows]
    rewards = [float(r["mean_reward_100"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, rewards, label="PPO (mean of last 100 episodes)")
    if random_reward is not None:
        ax.axhline(random_reward, color="gray", linestyle="--",
                   label=f"random play ({random_reward:.2f})")
    ax.set_xlabel("agent steps (all workers; 4 emulator frames each)")
    ax.set_ylabel("episode reward (one life)")
    ax.set_title("PPO on Breakout with shmenv workers, 2-core CPU")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path)
    print(f"wrote {png_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--minutes", type=float, default=None,
                        help="stop after this much wall time (the LR schedule still "
                             "assumes --updates)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--worker-steps", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=2.5e-4)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest when workers share the cores)")
    parser.add_argument("--seed", type=int, default=47)
    parser.add_argument("--csv", type=Path, default=None, help="write one row per update")
    parser.add_argument("--plot", type=Path, default=None, help="write the curve as PNG")
    parser.add_argument("--random-episodes", type=int, default=0,
                        help="measure random play over this many episodes (and plot it)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    random_reward = (random_baseline(args.random_episodes, args.game)
                     if args.random_episodes else None)
    if args.updates > 0:
        trainer = Trainer(n_workers=args.workers, worker_steps=args.worker_steps,
                          epochs=args.epochs, learning_rate=args.lr, game=args.game,
                          seed=args.seed)
        try:
            trainer.run_training_loop(args.updates, args.minutes, args.csv)
        finally:
            trainer.destroy()
    if args.plot is not None and args.csv is not None:
        plot_curve(args.csv, args.plot, random_reward)


if __name__ == "__main__":
    main()
