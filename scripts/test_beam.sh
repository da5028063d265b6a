#!/usr/bin/env bash
# The Apache Beam path's tests in their own environment (CI runs this after
# the README's test command):
#
#   bash scripts/test_beam.sh
#
# apache-beam caps pillow, protobuf, pyarrow and python-dateutil below the
# pins of constraints.txt, so the `beam` extra cannot share the main
# environment; constraints-beam.txt pins its own exact set. A fresh virtual
# environment ($BEAM_VENV, default a temporary folder), `pip install -e
# ".[dev,beam]" -c constraints-beam.txt`, then tests/test_beam.py with
# AFFECT_JAX_REQUIRE_BEAM=1: a missing apache_beam fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv="${BEAM_VENV:-$(mktemp -d)/venv}"
"$python" -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
pip install -q -e ".[dev,beam]" -c constraints-beam.txt
AFFECT_JAX_REQUIRE_BEAM=1 python -m pytest -q -p no:cacheprovider tests/test_beam.py
