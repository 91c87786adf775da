#!/usr/bin/env bash
# Run the server in the background, published on http://$HOST:$PORT (Swagger UI at /docs).
#   HOST              the address to publish on: 127.0.0.1 (default, this machine only) or 0.0.0.0 (the network)
#   PORT              the port on this machine (default 8000)
#   SERVING_API_KEY   when set, every endpoint but /health needs it (set one whenever HOST is not 127.0.0.1)
#   SERVING_*         batching and limits, e.g. SERVING_MAX_BATCH_SIZE=16 SERVING_MAX_QUEUE=64 (README.md lists them)
#   SERVING_DRAIN_S   on `stop`, how long the answers in flight have to finish (default 30 s): the container's stop
#                     timeout is 10 s more, so that the engine does not kill it first
#   CONTAINER_ENGINE, IMAGE, NAME, RUN_FLAGS  as for build.sh; NAME defaults to %%{container}
# Variables are passed by name (--env VAR), so their values never appear on a command line or in a file.
set -euo pipefail
read -ra engine <<< "${CONTAINER_ENGINE:-docker}"
read -ra extra <<< "${RUN_FLAGS:-}"
image="${IMAGE:-%%{image}}"
name="${NAME:-%%{container}}"
host="${HOST:-127.0.0.1}"
port="${PORT:-8000}"
drain="${SERVING_DRAIN_S:-30}"
args=(run --detach --name "$name" --publish "$host:$port:%%{port}" --stop-timeout "$(( ${drain%.*} + 10 ))")
for var in %%{settings}; do
  if [ -n "${!var:-}" ]; then args+=(--env "$var"); fi
done
"${engine[@]}" "${args[@]}" ${extra[@]+"${extra[@]}"} "$image"
echo "started $name: http://$host:$port/docs"
echo "  logs: ${engine[*]} logs -f $name    stop: ${engine[*]} rm -f $name    check: PORT=$port ./test.sh"
