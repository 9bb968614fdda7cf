#!/usr/bin/env bash
# The UI tests (tests/ui) drive Debian's Chromium through Playwright; Playwright's
# own browser download is not used. Idempotent and quiet.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
