#!/usr/bin/env bash
# Rewrites constraints.txt (the exact package versions that the README's
# install command and .ci/run install) from what a fresh, unconstrained
# install resolves today, then constraints-beam.txt (the `beam` extra's own
# environment, scripts/test_beam.sh) from constraints.txt with the pins
# apache-beam caps left free:
#
#   bash scripts/refresh_constraints.sh            # then rerun the quick start
#
# A fresh virtual environment (python3, or $PYTHON), the newest pip, then
# `pip install -e ".[dev,torch]"` without constraints, then
# `pip freeze --exclude-editable`. Local version labels are dropped
# (torch==2.13.0+cpu -> torch==2.13.0: the pin then matches the CPU build and
# the default build alike) and so are direct references (`name @ URL`), which
# no other machine can install. After a refresh, rerun the quick start and
# update the numbers that README.md and docs/RESULTS.md quote (docs/cluster.md,
# "Reproducibility").
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m venv "$tmp/venv"
# shellcheck disable=SC1091
. "$tmp/venv/bin/activate"
python -m pip install -q --upgrade pip
pip install -q -e ".[dev,torch]"
pip check
{
  echo "# Exact package versions of a fresh install of affect_jax[dev,torch]."
  echo "# Used by the README's install command and .ci/run:"
  echo "#   pip install -e \".[dev,torch]\" -c constraints.txt"
  echo "# Refresh (fresh venv, unconstrained install, pip freeze):"
  echo "#   bash scripts/refresh_constraints.sh"
  echo "# Resolved on $(python -c 'import platform, sys; print(f"CPython {sys.version.split()[0]}, {platform.system()} {platform.machine()}")'), $(date -u +%Y-%m-%d)."
  pip freeze --exclude-editable | grep -v ' @ ' | sed -E 's/^([^=]+==[^+]+)\+.*$/\1/'
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages)"

# The beam environment: constraints.txt's pins except those apache-beam caps
# (pillow<13, protobuf<7, pyarrow<26, python-dateutil<3 for Beam 2.77) and
# torch's own dependencies (not installed there).
deactivate
"$python" -m venv "$tmp/beam"
# shellcheck disable=SC1091
. "$tmp/beam/bin/activate"
python -m pip install -q --upgrade pip
grep -v -E '^(pillow|protobuf|pyarrow|python-dateutil|torch|sympy|mpmath|networkx|Jinja2|MarkupSafe|filelock|fsspec)==' \
  constraints.txt > "$tmp/beam-in.txt"
pip install -q -e ".[dev,beam]" -c "$tmp/beam-in.txt"
pip check
{
  echo "# Exact package versions of a fresh install of affect_jax[dev,beam]: the Apache"
  echo "# Beam path's own environment (apache-beam caps pillow, protobuf, pyarrow and"
  echo "# python-dateutil below constraints.txt's pins). Used by scripts/test_beam.sh:"
  echo "#   pip install -e \".[dev,beam]\" -c constraints-beam.txt"
  echo "# Refresh: bash scripts/refresh_constraints.sh (writes both files)."
  echo "# Resolved on $(python -c 'import platform, sys; print(f"CPython {sys.version.split()[0]}, {platform.system()} {platform.machine()}")'), $(date -u +%Y-%m-%d)."
  pip freeze --exclude-editable | grep -v ' @ ' | sed -E 's/^([^=]+==[^+]+)\+.*$/\1/'
} > constraints-beam.txt.new
mv constraints-beam.txt.new constraints-beam.txt
echo "wrote constraints-beam.txt ($(grep -vc '^#' constraints-beam.txt) packages)"
