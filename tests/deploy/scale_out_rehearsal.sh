#!/usr/bin/env bash
# Scale-out rehearsal on loopback: what a rollout or a scale-down does to clients behind the
# headless Service, in ~20 seconds.
#   - three vaultgemma-server replicas on a committed fixture, each with the deployment's
#     operational flags: JSON access log, drain on SIGTERM, and a short --max-connection-age so
#     that connections are closed (GOAWAY) and re-established during the run;
#   - vaultgemma-bench balances round-robin over the three (as clients of the headless Service
#     do) in a closed loop for DURATION seconds;
#   - a few seconds in, replica 2 gets SIGTERM (what kubelet sends after preStop): it drains its
#     streams and exits 0 while the run goes on against the other two.
# Passes when
#   - every replica served Generate calls (its own /metrics vaultgemma_grpc_requests_total says
#     so; replica 2 is scraped just before its SIGTERM) and its access log agrees;
#   - no request is lost: every request the bench sent completed, was still running when the
#     bench's own duration ended, or failed, and failures happen only during replica 2's
#     shutdown, with UNAVAILABLE (refused while draining; the client was told) or CANCELLED
#     (see the known shutdown races at the end); the replicas' access logs account for every
#     completed and cancelled request;
#   - replica 2 logged its drain and exited 0, and the others still serve.
#   tests/deploy/scale_out_rehearsal.sh SOURCE_DIR BUILD_DIR [DURATION_SECONDS]
set -euo pipefail
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
duration=${3:-12}
cd "$src"
server=$build/bin/vaultgemma-server
cli=$build/bin/vaultgemma-cli
bench=$build/bin/vaultgemma-bench
fixture=tests/fixtures/f32_mha_tied_sliding
for exe in "$server" "$cli" "$bench"; do
  [ -x "$exe" ] || { echo "scale_out_rehearsal: $exe is not built" >&2; exit 1; }
done
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2> /dev/null || true; done
  if [ -n "${KEEP_WORK:-}" ]; then echo "work dir: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
failures=0
fail() {
  echo "scale_out_rehearsal: $*" >&2
  failures=$((failures + 1))
}

ports=() metrics_ports=()
for i in 1 2 3; do
  "$server" --model "$fixture" --listen 127.0.0.1:0 --metrics-port 0 --threads 1 \
    --access-log json --drain-timeout 20 --max-connection-age 3 --max-connection-age-grace 30 \
    2> "$work/server$i.log" &
  pids+=($!)
done
for i in 1 2 3; do
  port=""
  for _ in $(seq 1 200); do
    port=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$work/server$i.log" | head -n 1)
    [ -n "$port" ] && break
    kill -0 "${pids[i - 1]}" 2> /dev/null || break
    sleep 0.05
  done
  if [ -z "$port" ]; then
    echo "scale_out_rehearsal: replica $i did not start:" >&2
    cat "$work/server$i.log" >&2
    exit 1
  fi
  ports+=("$port")
  metrics_ports+=("$(sed -n 's/.*(metrics port \([0-9]*\)).*/\1/p' "$work/server$i.log" | head -n 1)")
done
targets=$(printf '127.0.0.1:%s,' "${ports[@]}")
targets=${targets%,}
echo "replicas: $targets (metrics ${metrics_ports[*]})"

# generate_ok METRICS_FILE: finished Generate calls with status OK.
generate_ok() {
  sed -n 's/^vaultgemma_grpc_requests_total{code="OK",method="Generate"} \([0-9]*\).*/\1/p' "$1"
}

"$bench" --server "$targets" --concurrency 6 --duration "$duration" --input-len 8 \
  --output-len 96 --warmup-requests 0 --out "$work/bench" > "$work/bench.txt" 2>&1 &
bench_pid=$!
pids+=("$bench_pid")
launched=$EPOCHREALTIME
sleep 3
curl -fsS "http://127.0.0.1:${metrics_ports[1]}/metrics" > "$work/metrics2.txt" \
  || fail "replica 2's /metrics did not answer"
kill -TERM "${pids[1]}"
sigterm_at=$EPOCHREALTIME
echo "SIGTERM to replica 2 (pid ${pids[1]})"
replica2_rc=0
wait "${pids[1]}" || replica2_rc=$?
exited_at=$EPOCHREALTIME
[ "$replica2_rc" -eq 0 ] || fail "replica 2 exited $replica2_rc after SIGTERM (want 0 after draining)"
grep -q "SIGTERM, shutting down" "$work/server2.log" || fail "replica 2 did not log its drain"
grep -q "drain timeout" "$work/server2.log" && fail "replica 2 hit its drain timeout"
bench_rc=0
wait "$bench_pid" || bench_rc=$?
cat "$work/bench.txt"
[ "$bench_rc" -eq 0 ] || fail "vaultgemma-bench exited $bench_rc"
for i in 1 3; do
  "$cli" health --server "127.0.0.1:${ports[i - 1]}" > /dev/null || fail "replica $i no longer serves"
  curl -fsS "http://127.0.0.1:${metrics_ports[i - 1]}/metrics" > "$work/metrics$i.txt" \
    || fail "replica $i's /metrics did not answer"
done
kill -TERM "${pids[0]}" "${pids[2]}"
wait "${pids[0]}" || fail "replica 1 did not exit 0"
wait "${pids[2]}" || fail "replica 3 did not exit 0"
pids=()

# Spread: every replica served (its own metrics), and its access log agrees.
for i in 1 2 3; do
  served=$(generate_ok "$work/metrics$i.txt")
  [ "${served:-0}" -gt 0 ] || fail "replica $i served no Generate call (vaultgemma_grpc_requests_total)"
  echo "replica $i: vaultgemma_grpc_requests_total{method=\"Generate\",code=\"OK\"} ${served:-0}"
done
log_count() {  # FILE CODE: Generate calls with that status in an access log
  grep '"method":"Generate"' "$1" | grep -c "\"code\":\"$2\"" || true
}
for i in 1 3; do
  [ "$(generate_ok "$work/metrics$i.txt")" = "$(log_count "$work/server$i.log" OK)" ] \
    || fail "replica $i: /metrics and access log disagree on completed Generate calls"
done
drained=$(sed -n '/SIGTERM, shutting down/,$p' "$work/server2.log" | grep '"method":"Generate"' | grep -c '"code":"OK"' || true)
refused=$(log_count "$work/server2.log" UNAVAILABLE)
echo "replica 2: $drained streams finished while draining, $refused calls refused (UNAVAILABLE)"

# No request lost. Failures may only come from replica 2's drain and shutdown: requests that
# started from 1 s before its SIGTERM to 3 s after it exited (the clients notice a closed
# connection and reconnect with backoff; times relative to the bench's
# launch, which the stage's start_s follows within milliseconds).
results=$work/bench/results.json
[ -f "$results" ] || { fail "no results.json"; exit 1; }
completed=$(jq '.stages[0].completed' "$results")
failed=$(jq '.stages[0].failed' "$results")
cancelled=$(jq '.stages[0].cancelled_at_end' "$results")
unavailable=$(jq '.stages[0].errors.UNAVAILABLE // 0' "$results")
sent=$(($(wc -l < "$work/bench/requests.csv") - 1))
echo "bench: $sent sent = $completed completed + $failed failed ($(jq -c '.stages[0].errors' "$results")) + $cancelled cancelled at the end of the run"
[ "$completed" -gt 0 ] || fail "nothing completed"
[ "$sent" -eq $((completed + failed + cancelled)) ] || fail "$sent sent but $completed + $failed + $cancelled accounted for"
window_from=$(echo "$sigterm_at - $launched - 1" | bc)
window_to=$(echo "$exited_at - $launched + 3" | bc)
# requests.csv: request_index,start_s,status,cancelled_at_end,...,error (last column).
awk -F, -v from="$window_from" -v to="$window_to" '
  NR > 1 && $6 != "OK" && $7 == 0 {
    inside = ($5 >= from && $5 <= to)
    print (inside ? "in" : "out"), $6, $4, $5, $NF
  }' "$work/bench/requests.csv" > "$work/failed.txt"
while read -r where status index start error; do
  if [ "$where" = out ] && [ "$status" = UNAVAILABLE ] && [[ "$error" == *"reset by peer"* ]]; then
    # The same race also follows a --max-connection-age GOAWAY on a healthy replica: the server
    # closes the connection while a new stream is on its way. Shown below as a WARNING.
    echo "known race outside replica 2's shutdown: request $index (start ${start} s): $error"
  elif [ "$where" = out ]; then
    fail "request $index (start ${start} s) failed with $status ($error) outside replica 2's shutdown (${window_from}-${window_to} s)"
  elif [ "$status" != UNAVAILABLE ] && [ "$status" != CANCELLED ]; then
    fail "request $index failed with $status ($error) during replica 2's shutdown"
  fi
done < "$work/failed.txt"
server_ok=0
for i in 1 2 3; do
  server_ok=$((server_ok + $(log_count "$work/server$i.log" OK)))
done
[ "$refused" -le "$unavailable" ] || fail "replica 2 refused $refused calls, the client saw $unavailable UNAVAILABLE"
# A failure that replica 2 did not log as a refusal (UNAVAILABLE "server is draining") is a
# known race in the server's shutdown, seen in about one run in four: a stream that the replica
# finished (access log OK) reaches the client as UNAVAILABLE "Connection reset by peer" when the
# process exits, or a call arriving after the drain is CANCELLED by gRPC's Shutdown before the
# service sees it. The client is told in both cases, so nothing is silently lost; they are
# counted and shown, and VG_REHEARSAL_STRICT=1 makes them fail the test (for the server fix).
# Every request the bench completed was finished by a replica; a replica may also have finished
# one that the bench cancelled at the end of its run or lost in replica 2's shutdown.
unexplained=$((failed - refused))
[ "$server_ok" -ge "$completed" ] \
  || fail "the bench completed $completed Generate calls, the replicas finished only $server_ok"
[ "$server_ok" -le $((completed + cancelled + unexplained)) ] \
  || fail "the replicas finished $server_ok Generate calls, the bench completed $completed (+ $cancelled cancelled at the end, $unexplained lost in the shutdown)"
if [ "$unexplained" -gt 0 ]; then
  echo "WARNING: $unexplained request(s) failed without being refused (known server races):"
  sed 's/^in /  /; s/^out /  /' "$work/failed.txt"
  [ -z "${VG_REHEARSAL_STRICT:-}" ] || fail "VG_REHEARSAL_STRICT: requests lost in replica 2's shutdown"
fi

if [ $failures -ne 0 ]; then
  echo "scale_out_rehearsal: $failures problem(s)" >&2
  exit 1
fi
echo "scale_out_rehearsal: ok"
