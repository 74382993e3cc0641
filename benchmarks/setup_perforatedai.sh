#!/usr/bin/env bash
# The reference library's own environment, for `python -m benchmarks.tasks --methods perforatedai`.
# perforatedai==3.2.9 is a benchmark peer, never a dependency of hf_dendrites: it gets its own
# virtual environment, installed --no-deps; torch, transformers and the rest come from the main
# environment (.venv, made by scripts/setup.sh) through a .pth file, so both run the same versions.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
main_site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
.venv/bin/python -m venv --without-pip .venv-perforatedai 2>/dev/null || python3 -m venv .venv-perforatedai
pai_site=$(.venv-perforatedai/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$main_site" > "$pai_site/main_environment.pth"
.venv/bin/python -m pip install --quiet --no-deps --target "$pai_site" perforatedai==3.2.9
.venv-perforatedai/bin/python -c "import perforatedai, torch; print('perforatedai ready, torch', torch.__version__)"
