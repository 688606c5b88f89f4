#!/usr/bin/env bash
# Install hparse with the CPU build of PyTorch 2.13.0 (no CUDA downloads), plus test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev]"
