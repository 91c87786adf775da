#!/usr/bin/env bash
# Check a running server over HTTP: /health, /ask and /v1/chat/completions must answer. Exits 1, loudly, if not.
#   BASE_URL (default http://127.0.0.1:$PORT, PORT default 8000), SERVING_API_KEY when the server has one,
#   WAIT_S: how long to wait for the model to load (default 180)
set -euo pipefail
base="${BASE_URL:-http://127.0.0.1:${PORT:-8000}}"
wait_s="${WAIT_S:-180}"
auth=()
if [ -n "${SERVING_API_KEY:-}" ]; then auth=(-H "Authorization: Bearer $SERVING_API_KEY"); fi
fail() { echo "FAIL: $*" >&2; exit 1; }
post() { curl -fsS ${auth[@]+"${auth[@]}"} -H 'Content-Type: application/json' -d "$2" "$base$1"; }

echo "waiting up to ${wait_s} s for $base/health"
for _ in $(seq "$wait_s"); do
  if curl -fsS "$base/health" > /dev/null 2>&1; then break; fi
  sleep 1
done
health=$(curl -fsS "$base/health") || fail "$base/health did not answer 200 within ${wait_s} s"
echo "/health: $health"

answer=$(post /ask '{"question": "What is the capital of France?", "max_new_tokens": 24}') || fail "/ask failed"
echo "$answer" | grep -q '"answer":"[^"]' || fail "/ask gave no answer: $answer"
echo "/ask: $answer"

chat=$(post /v1/chat/completions '{"messages": [{"role": "user", "content": "What is Python?"}], "max_tokens": 24}') \
  || fail "/v1/chat/completions failed"
echo "$chat" | grep -q '"content":"[^"]' || fail "/v1/chat/completions gave no content: $chat"
echo "/v1/chat/completions: $chat"
echo "PASS: $base answers /health, /ask and /v1/chat/completions"
