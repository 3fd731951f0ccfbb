#!/usr/bin/env bash
# Install lakepipe with its test tools (and PostgreSQL/Chromium when root on Debian), then run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
