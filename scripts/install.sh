#!/usr/bin/env bash
# Install lakepipe into ./.venv (Python >= 3.11). With --test, also the test tools and, when run as
# root on Debian/Ubuntu, the system packages the tests use: PostgreSQL (catalog tests) and Chromium
# (report rendering test). Only package registries are contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=""
if [ "${1:-}" = "--test" ]; then
  extras="[test,dev]"
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    need=()
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
    if [ ${#need[@]} -gt 0 ]; then
      echo "installing system packages: ${need[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
  fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# uv (from PyPI) installs the same packages in parallel: 30 s against pip's 3 to 6 minutes on a
# 2-core machine with an empty cache; pip is the fallback where uv cannot be installed
if .venv/bin/python -m pip install -q --disable-pip-version-check uv 2>/dev/null && [ -x .venv/bin/uv ]; then
  # bytecode compiled now, as pip does (uv does not by default): the tests run with
  # PYTHONDONTWRITEBYTECODE, and every fresh process would compile its imports again
  .venv/bin/uv pip install -q --compile-bytecode --python .venv/bin/python -e ".${extras}"
else
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"
fi
echo "lakepipe installed in .venv ($(.venv/bin/lakepipe --version)); to have \`lakepipe\` on your PATH:"
echo "  source $PWD/.venv/bin/activate     (or: export PATH=\"$PWD/.venv/bin:\$PATH\")"
