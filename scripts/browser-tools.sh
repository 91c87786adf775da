#!/usr/bin/env bash
# A real browser for the @contract scenario that opens /docs: Chromium from Debian's packages. Run by
# `make test-tools`. Where it cannot be installed, it says why and exits 0: that scenario then skips, printing the reason.
set -uo pipefail
TOOL=browser-tools SKIPS="the /docs browser scenario will be skipped"
# shellcheck source=scripts/apt.sh
source "$(dirname "$0")/apt.sh"

if ! command -v chromium > /dev/null; then
  apt_install Chromium chromium
fi
echo "browser-tools: $(chromium --version 2> /dev/null): ready"
