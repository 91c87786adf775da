#!/usr/bin/env bash
# Build the image of %%{model}.
#   CONTAINER_ENGINE  docker (default) or podman, with any global flags: "podman --runtime runc"
#   IMAGE             the tag (default %%{image})
#   BASE_IMAGE        another Python base (default %%{base_image}; it needs python3 with venv)
#   BUILD_FLAGS       extra flags for `build`, e.g. "--isolation chroot --format docker" for podman
set -euo pipefail
cd "$(dirname "$0")"
read -ra engine <<< "${CONTAINER_ENGINE:-docker}"
read -ra extra <<< "${BUILD_FLAGS:-}"
image="${IMAGE:-%%{image}}"
args=(build --tag "$image")
if [ -n "${BASE_IMAGE:-}" ]; then args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE"); fi
"${engine[@]}" "${args[@]}" ${extra[@]+"${extra[@]}"} .
echo "built $image: start it with ./run.sh"
