# Sourced by the *-tools.sh scripts: Debian packages installed where this machine allows it, or a skip that says why.
# The sourcing script sets TOOL (its name in messages) and SKIPS (what is skipped without it) first.

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo > /dev/null; then sudo -n "$@"; else return 1; fi; }

# LIFECYCLE_STRICT=1 (what .ci/run sets): a tool that cannot be installed fails the set-up instead
skip() {
  if [ "${LIFECYCLE_STRICT:-}" = 1 ]; then echo "$TOOL: $* ($SKIPS); LIFECYCLE_STRICT=1 requires it" >&2; exit 1; fi
  echo "$TOOL: $* ($SKIPS)"; exit 0
}

# apt_install WHAT PACKAGE...: install the packages (refreshing the package lists once if the first try fails), or
# skip, naming WHAT is missing
apt_install() {
  local what="$1"
  shift
  command -v apt-get > /dev/null || skip "$what is missing and this is not a Debian-like system with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -qq --no-install-recommends "$@" > /dev/null 2>&1 \
    || { as_root apt-get update -qq > /dev/null 2>&1 \
         && as_root apt-get install -y -qq --no-install-recommends "$@" > /dev/null 2>&1; } \
    || skip "could not install $* with apt-get (root and Debian's package repository are needed)"
}
