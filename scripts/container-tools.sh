#!/usr/bin/env bash
# The container tooling the @container export scenario uses, installed where this machine allows it:
#   - podman and runc from Debian's packages (no Docker engine runs on these machines; crun fails on their cgroups)
#   - a Python base image built locally with mmdebstrap (no image registry can be reached), imported into podman as
#     localhost/lifecycle-python:bookworm
# Run by `make test`. Where something cannot be installed, it says why and exits 0: the scenario then skips, printing
# the reason. Needs root (or sudo) and Debian's package repository.
set -uo pipefail
BASE_IMAGE="${BASE_IMAGE:-localhost/lifecycle-python:bookworm}"
PACKAGES="podman runc mmdebstrap uidmap slirp4netns fuse-overlayfs containernetworking-plugins"
TOOL=container-tools SKIPS="the @container scenario will be skipped"
# shellcheck source=scripts/apt.sh
source "$(dirname "$0")/apt.sh"

if ! command -v podman > /dev/null || ! command -v runc > /dev/null || ! command -v mmdebstrap > /dev/null; then
  # shellcheck disable=SC2086
  apt_install podman $PACKAGES
fi

podman=(podman --runtime runc)
if ! as_root "${podman[@]}" image exists "$BASE_IMAGE"; then
  tar="$(mktemp -d)/base.tar"
  echo "container-tools: building $BASE_IMAGE with mmdebstrap (about 30 s, once)"
  as_root mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$tar" \
    || skip "mmdebstrap could not build the base image from Debian's repository"
  as_root "${podman[@]}" import "$tar" "$BASE_IMAGE" > /dev/null 2>&1 || skip "podman could not import the base image"
  rm -rf "$(dirname "$tar")"
fi
echo "container-tools: podman $(podman --version | awk '{print $3}'), runc, base image $BASE_IMAGE: ready"
