#!/usr/bin/env bash
# Azurite, Microsoft's Azure Blob emulator (npm), for the storage conformance suite.
# The tests start `azurite-blob` themselves on a free 127.0.0.1 port; this only installs.
set -euo pipefail
tools="${RUNTIME_CI_TOOLS:-$HOME/.cache/runtime-ci}"
prefix="$tools/azurite"
if [ -x "$prefix/node_modules/.bin/azurite-blob" ]; then exit 0; fi
mkdir -p "$prefix"
npm install --silent --no-audit --no-fund --prefix "$prefix" azurite@3 >/dev/null
