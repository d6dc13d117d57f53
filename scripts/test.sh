#!/usr/bin/env bash
# Installs what the tests need (idempotent; fast when already installed) and runs them.
# The oracle (official sam2) goes in without its dependencies: its build would otherwise
# pull a CUDA torch of several GB. torch==2.13.0 comes first so nothing replaces it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_q() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }
"$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
  || pip_q "torch==2.13.0"
pip_q -e ".[convert,test]"
"$PY" -c "import sam2" 2>/dev/null \
  || SAM2_BUILD_CUDA=0 pip_q --no-deps --no-build-isolation "sam2==1.1.0"
# The linter first: it takes a second and its rules live in pyproject.toml.
"$PY" -m ruff check .
# A private compilation cache per run: the tests still go through the persistent cache, but
# never read entries another process may have left half-written.
rm -rf .jax_cache
export JAX_COMPILATION_CACHE_DIR="$PWD/.jax_cache"
# With arguments: one pytest run, as given (e.g. `bash scripts/test.sh tests/test_cli.py -x`).
if [ $# -gt 0 ]; then
  exec "$PY" -m pytest -q "$@"
fi
# Without: every test file in its own process, two at a time (see scripts/run_tests.py).
exec "$PY" scripts/run_tests.py
