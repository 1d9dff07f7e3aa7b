#!/usr/bin/env bash
# Installs Debian's chromium for the browser tests when it is missing (Playwright drives it;
# a test tool's own browser download does not work on these machines).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "chromium: present ($(/usr/bin/chromium --version 2>/dev/null | head -n1))"
  exit 0
fi
echo "chromium: installing Debian's package..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "chromium: installed ($(/usr/bin/chromium --version 2>/dev/null | head -n1))"
