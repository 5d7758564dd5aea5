#!/usr/bin/env bash
# Run gymnasium's own vector tests (tests/vector of a Gymnasium checkout) with
# shmenv.AsyncVectorEnv in place of gymnasium's AsyncVectorEnv: every test that builds an
# AsyncVectorEnv gets shmenv's. The checkout should match the installed gymnasium.
#
#   git clone --depth 1 --branch v1.4.0 https://github.com/Farama-Foundation/Gymnasium /tmp/Gymnasium
#   bash bench/gymnasium_vector_suite.sh /tmp/Gymnasium
#
# Some tests need gymnasium's extras (pygame for rendering CartPole, Box2D); without them
# they fail the same way with gymnasium's own AsyncVectorEnv.
set -euo pipefail
checkout="${1:?usage: $0 PATH_TO_GYMNASIUM_CHECKOUT}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$checkout/tests" "$work/tests"
cat > "$work/conftest.py" <<'PY'
import gymnasium.vector
import gymnasium.vector.async_vector_env

import shmenv

gymnasium.vector.AsyncVectorEnv = shmenv.AsyncVectorEnv
gymnasium.vector.async_vector_env.AsyncVectorEnv = shmenv.AsyncVectorEnv
PY
cd "$work"
"${PYTHON:-python}" -m pytest -p no:cacheprovider -q tests/vector "${@:2}"
