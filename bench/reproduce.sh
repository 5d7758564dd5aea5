#!/usr/bin/env bash
# Regenerate every figure in docs/performance.md on this machine: runs all benchmark
# suites with publication settings, writes JSON to bench/results/ and plots to
# bench/plots/, then rewrites the generated tables in docs/performance.md (between the
# <!-- BEGIN x --> / <!-- END x --> markers). Takes about 25 minutes on 2 cores.
#
#   bench/reproduce.sh                              # publication settings
#   SECONDS_PER_RUN=3 ROUNDS=1 bench/reproduce.sh   # a quick look (noisier)
#
# Run it from a checkout; it uses the checkout's shmenv, whatever is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-2}"
R=bench/results
P=bench/plots
mkdir -p "$R" "$P"

"$PY" -m shmenv bench --seconds "$SECONDS_PER_RUN" --rounds "$ROUNDS" --warmup "$WARMUP" \
    --json "$R/throughput.json" --plot "$P/throughput.png"
"$PY" -m shmenv bench coordination --rounds "$ROUNDS" \
    --json "$R/coordination.json" --plot "$P/coordination.png"
"$PY" -m shmenv bench startup --rounds "$ROUNDS" \
    --json "$R/startup.json" --plot "$P/startup.png"
"$PY" -m shmenv bench anyenv --env CartPole-v1 --num-envs 64 --seconds "$SECONDS_PER_RUN" \
    --rounds "$ROUNDS" --warmup "$WARMUP" \
    --json "$R/anyenv_cartpole.json" --plot "$P/anyenv_cartpole.png"
# The MuJoCo envs, with first-ready batches too (skipped, with a line saying so, where
# gymnasium[mujoco] is not installed).
MUJOCO_CONTENDERS=ceiling,shmenv,shmenv-async,gymnasium-async,gymnasium-sync,sb3,envpool
"$PY" -m shmenv bench anyenv --env HalfCheetah-v5 --num-envs 64 --seconds "$SECONDS_PER_RUN" \
    --rounds "$ROUNDS" --warmup "$WARMUP" --only "$MUJOCO_CONTENDERS" \
    --json "$R/anyenv_halfcheetah.json" --plot "$P/anyenv_halfcheetah.png"
"$PY" -m shmenv bench anyenv --env Humanoid-v5 --num-envs 64 --seconds "$SECONDS_PER_RUN" \
    --rounds "$ROUNDS" --warmup "$WARMUP" --only "$MUJOCO_CONTENDERS" \
    --json "$R/anyenv_humanoid.json" --plot "$P/anyenv_humanoid.png"
"$PY" -m shmenv bench layouts --json "$R/layouts.json" --plot "$P/layouts.png"
"$PY" -m shmenv bench profile --json "$R/profile_labml.json"
"$PY" -m shmenv bench profile --maxpool standard --json "$R/profile_standard.json"

"$PY" bench/update_docs.py "$R" docs/performance.md
echo "Updated docs/performance.md from $R; plots in $P."
