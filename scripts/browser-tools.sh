#!/usr/bin/env bash
# A real browser for the @contract scenario that opens /docs: Chromium from Debian's packages. Run by
# `make test-tools`. Where it cannot be installed, it says why and exits 0: that scenario then skips, printing the reason.
set -uo pipefail
skip() { echo "browser-tools: $* (the /docs browser scenario will be skipped)"; exit 0; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo > /dev/null; then sudo -n "$@"; else return 1; fi; }

if ! command -v chromium > /dev/null; then
  command -v apt-get > /dev/null || skip "Chromium is missing and this is not a Debian-like system with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -qq --no-install-recommends chromium > /dev/null 2>&1 \
    || { as_root apt-get update -qq > /dev/null 2>&1 \
         && as_root apt-get install -y -qq --no-install-recommends chromium > /dev/null 2>&1; } \
    || skip "could not install chromium with apt-get (root and Debian's package repository are needed)"
fi
echo "browser-tools: $(chromium --version 2> /dev/null): ready"
