#!/usr/bin/env bash
# `make demo`: the server on the demo model (random weights: nonsense text, real machinery),
# one streamed generation through vaultgemma-cli, then the server stops.
#   tools/demo/run_demo.sh BUILD_DIR
set -euo pipefail
build=${1:-build}
model="$build/demo-model"
tools/demo/make_demo_model.sh "$build" "$model"

log=$(mktemp)
"$build/bin/vaultgemma-server" --model "$model" --listen 127.0.0.1:0 --metrics-port 0 \
  --access-log text 2> "$log" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$log"' EXIT

port=""
for _ in $(seq 1 100); do
  port=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$log" | head -n 1)
  [ -n "$port" ] && break
  if ! kill -0 "$server" 2>/dev/null; then
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
[ -n "$port" ] || { echo "run_demo: the server did not report its port" >&2; cat "$log" >&2; exit 1; }
cli=("$build/bin/vaultgemma-cli")

echo "== vaultgemma-server is up on 127.0.0.1:$port (demo model: random weights, nonsense text)"
"${cli[@]}" health --server "127.0.0.1:$port"
"${cli[@]}" info --server "127.0.0.1:$port"
echo "== vaultgemma-cli generate --prompt 'Tell me about differential privacy.' (streamed)"
"${cli[@]}" generate --server "127.0.0.1:$port" --prompt "Tell me about differential privacy." \
  --max-new-tokens 32 --temperature 0.8 --seed 1
echo "== the same request with --json"
"${cli[@]}" generate --server "127.0.0.1:$port" --prompt "Tell me about differential privacy." \
  --max-new-tokens 8 --temperature 0.8 --seed 1 --json
metrics_port=$(sed -n 's/.*(metrics port \([0-9]*\)).*/\1/p' "$log" | head -n 1)
echo "== a few lines of http://127.0.0.1:$metrics_port/metrics"
exec 3<>"/dev/tcp/127.0.0.1/$metrics_port"
printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
grep -E '^vaultgemma_(requests_total|generation_tokens_total|time_to_first_token_seconds_count|kv_cache_usage_ratio|requests_running)' <&3 || true
exec 3<&-
echo "== the server's access log (no prompt or completion text)"
grep -v '^vaultgemma-server:' "$log" || true
kill -TERM "$server"
wait "$server"
trap 'rm -f "$log"' EXIT
echo "== the server drained and stopped (exit 0)"
