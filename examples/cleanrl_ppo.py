"""PPO in the CleanRL single-file style, with ``shmenv.make`` as the vector env.

CleanRL's Atari PPO builds ``gym.vector.SyncVectorEnv`` over wrapped ``gym.make`` envs;
here one call replaces all of that. Things to know when porting a CleanRL script:

* ``shmenv.make`` already does frame skip, gray 84x84 and the 4-frame stack, and one life
  is one episode (the labml rule); drop the Atari wrappers. Rewards are not clipped.
* ``obs`` is a view of the shared block, overwritten by the next ``step``: copying it into
  the storage tensor (as below, and as CleanRL does with ``torch.Tensor(obs)``) is enough.
  Never keep ``torch.from_numpy(obs)`` across steps, or pass ``copy=True``.
* Finished episodes appear in ``infos["episode"]`` with the ``infos["_episode"]`` mask,
  exactly as gymnasium's ``RecordEpisodeStatistics`` reports them.

    python examples/cleanrl_ppo.py --total-timesteps 20000 --num-envs 8
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

import shmenv


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Module:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class Agent(nn.Module):
    def __init__(self, num_actions: int) -> None:
        super().__init__()
        self.network = nn.Sequential(
            layer_init(nn.Conv2d(4, 32, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten(), layer_init(nn.Linear(64 * 7 * 7, 512)), nn.ReLU(),
        )
        self.actor = layer_init(nn.Linear(512, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(512, 1), std=1)

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(self.network(x / 255.0))

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None):
        hidden = self.network(x / 255.0)
        probs = Categorical(logits=self.actor(hidden))
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="CleanRL-style PPO on shmenv")
    p.add_argument("--game", default="Breakout")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--total-timesteps", type=int, default=100_000)
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--num-steps", type=int, default=128)
    p.add_argument("--learning-rate", type=float, default=2.5e-4)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--gae-lambda", type=float, default=0.95)
    p.add_argument("--num-minibatches", type=int, default=4)
    p.add_argument("--update-epochs", type=int, default=4)
    p.add_argument("--clip-coef", type=float, default=0.1)
    p.add_argument("--ent-coef", type=float, default=0.01)
    p.add_argument("--vf-coef", type=float, default=0.5)
    p.add_argument("--max-grad-norm", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = max(args.total_timesteps // batch_size, 1)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    envs = shmenv.make(args.game, args.num_envs, seed=args.seed)
    agent = Agent(envs.single_action_space.n)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    obs = torch.zeros((args.num_steps, args.num_envs, *envs.single_observation_space.shape))
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long)
    logprobs = torch.zeros((args.num_steps, args.num_envs))
    rewards = torch.zeros((args.num_steps, args.num_envs))
    dones = torch.zeros((args.num_steps, args.num_envs))
    values = torch.zeros((args.num_steps, args.num_envs))

    global_step, start = 0, time.time()
    next_obs, _ = envs.reset()
    next_obs = torch.tensor(next_obs, dtype=torch.float32)  # a copy: the block moves on
    next_done = torch.zeros(args.num_envs)
    returns: list[float] = []
    try:
        for iteration in range(1, num_iterations + 1):
            frac = 1.0 - (iteration - 1.0) / num_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate
            for step in range(args.num_steps):
                global_step += args.num_envs
                obs[step], dones[step] = next_obs, next_done
                with torch.no_grad():
                    action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step], actions[step], logprobs[step] = value.flatten(), action, logprob
                block_obs, reward, terminations, truncations, infos = envs.step(action.numpy())
                rewards[step] = torch.as_tensor(reward, dtype=torch.float32)
                next_obs = torch.tensor(block_obs, dtype=torch.float32)
                next_done = torch.as_tensor(terminations | truncations, dtype=torch.float32)
                if "episode" in infos:
                    returns += infos["episode"]["r"][infos["_episode"]].tolist()

            with torch.no_grad():  # GAE
                next_value = agent.get_value(next_obs).reshape(1, -1)
                advantages = torch.zeros_like(rewards)
                lastgaelam = 0
                for t in reversed(range(args.num_steps)):
                    if t == args.num_steps - 1:
                        nextnonterminal, nextvalues = 1.0 - next_done, next_value
                    else:
                        nextnonterminal, nextvalues = 1.0 - dones[t + 1], values[t + 1]
                    delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
                    lastgaelam = (delta + args.gamma * args.gae_lambda * nextnonterminal
                                  * lastgaelam)
                    advantages[t] = lastgaelam
                b_returns = (advantages + values).reshape(-1)

            b_obs = obs.reshape((-1, *envs.single_observation_space.shape))
            b_logprobs, b_actions = logprobs.reshape(-1), actions.reshape(-1)
            b_advantages = advantages.reshape(-1)
            for _epoch in range(args.update_epochs):
                b_inds = np.random.permutation(batch_size)
                for begin in range(0, batch_size, minibatch_size):
                    mb = b_inds[begin:begin + minibatch_size]
                    _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                        b_obs[mb], b_actions[mb])
                    ratio = (newlogprob - b_logprobs[mb]).exp()
                    mb_adv = b_advantages[mb]
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                    pg_loss = torch.max(
                        -mb_adv * ratio,
                        -mb_adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef),
                    ).mean()
                    v_loss = 0.5 * ((newvalue.view(-1) - b_returns[mb]) ** 2).mean()
                    loss = pg_loss - args.ent_coef * entropy.mean() + v_loss * args.vf_coef
                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()

            recent = np.mean(returns[-100:]) if returns else float("nan")
            print(f"iteration {iteration}/{num_iterations}  global_step {global_step}  "
                  f"SPS {global_step / (time.time() - start):.0f}  episodes {len(returns)}  "
                  f"mean return (last 100) {recent:.2f}", flush=True)
    finally:
        envs.close()


if __name__ == "__main__":
    main()
