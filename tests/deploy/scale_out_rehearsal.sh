#!/usr/bin/env bash
# Scale-out rehearsal on loopback: what a rollout or a scale-down does to clients behind the
# headless Service, in ~20 seconds.
#   - three vaultgemma-server replicas on a committed fixture, each with the deployment's
#     operational flags: JSON access log, drain on SIGTERM, and a short --max-connection-age so
#     that connections are closed (GOAWAY) and re-established during the run;
#   - vaultgemma-bench balances round-robin over the three (as clients of the headless Service
#     do, skipping a replica whose health service says NOT_SERVING) in a closed loop for
#     DURATION seconds;
#   - a few seconds in, replica 2 gets SIGTERM (what kubelet sends after preStop): it drains its
#     streams and exits 0 while the run goes on against the other two.
# Passes when
#   - every replica served Generate calls (its own /metrics vaultgemma_grpc_requests_total says
#     so; replica 2 is scraped just before its SIGTERM) and its access log agrees;
#   - no request is lost: every request the bench sent completed, was still running when the
#     bench's own duration ended, or was refused by the draining replica 2 with UNAVAILABLE
#     "server is draining" (the client was told; replica 2 logged exactly as many refusals as the
#     bench saw), and the replicas' access logs account for every completed request. The one
#     exception is a gRPC race on connections that --max-connection-age closes (see the end);
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
[ "$replica2_rc" -eq 0 ] || fail "replica 2 exited $replica2_rc after SIGTERM (want 0 after draining)"
grep -q "SIGTERM, shutting down" "$work/server2.log" || fail "replica 2 did not log its drain"
grep -q "drain timeout" "$work/server2.log" && fail "replica 2 hit its drain timeout"
grep -q "still writing their status" "$work/server2.log" \
  && fail "replica 2 closed its connections with calls still in flight"
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

# No request lost. requests.csv says which server had each call (peer), so each failure is
# judged by the replica it happened on. Times: seconds since the bench's launch (the stage's
# start_s follows it within milliseconds).
results=$work/bench/results.json
[ -f "$results" ] || { fail "no results.json"; exit 1; }
completed=$(jq '.stages[0].completed' "$results")
failed=$(jq '.stages[0].failed' "$results")
cancelled=$(jq '.stages[0].cancelled_at_end' "$results")
sent=$(($(wc -l < "$work/bench/requests.csv") - 1))
echo "bench: $sent sent = $completed completed + $failed failed ($(jq -c '.stages[0].errors' "$results")) + $cancelled cancelled at the end of the run"
[ "$completed" -gt 0 ] || fail "nothing completed"
[ "$sent" -eq $((completed + failed + cancelled)) ] || fail "$sent sent but $completed + $failed + $cancelled accounted for"
sigterm_s=$(echo "$sigterm_at - $launched" | bc)
# requests.csv: request_index,start_s,status,cancelled_at_end ($4-$7), e2e_s ($13), peer ($15),
# error (the rest). One line per failure: replica (0: none), start, end, status, index, error.
awk -F, -v p1="${ports[0]}" -v p2="${ports[1]}" -v p3="${ports[2]}" '
  NR > 1 && $6 != "OK" && $7 == 0 {
    port = $15; sub(/.*:/, "", port)
    replica = port == p1 ? 1 : port == p2 ? 2 : port == p3 ? 3 : 0
    error = $16; for (i = 17; i <= NF; ++i) error = error "," $i
    print replica, $5, $5 + $13, $6, $4, error
  }' "$work/bench/requests.csv" > "$work/failed.txt"
# Allowed failures:
#   - replica 2's refusals while draining, UNAVAILABLE "server is draining": the client was told,
#     and their number must be the one replica 2 logged (less any lost to the race below);
#   - the one known race left, shown as a WARNING (VG_REHEARSAL_STRICT=1 fails it): a stream
#     that a replica finished on a connection that its --max-connection-age then closed reaches
#     the client as UNAVAILABLE "Connection reset by peer". gRPC C++ 1.51 closes the connection
#     as soon as the last stream's status is written, with the client's latest WINDOW_UPDATEs
#     unread; Linux answers that close() with a RST and drops what the socket had not sent yet,
#     that stream's last messages and status (seen with tcpdump). Neither the server nor the
#     client can make gRPC wait for that data, and the server did the work, so the bench does not
#     retry it. Replica 2 closes no connection of its own accord before 0.5 s after its SIGTERM
#     (and its streams end well before that), so on replica 2 only resets that ended before
#     SIGTERM + 0.25 s are this race (the bench's clock runs a few ms behind the script's); a
#     later one would be its shutdown losing a call.
refused_seen=0 age_resets=0 age_resets2=0
while read -r replica start end status index error; do
  if [ "$replica" = 2 ] && [ "$status" = UNAVAILABLE ] && [[ "$error" == *"server is draining"* ]]; then
    refused_seen=$((refused_seen + 1))
  elif [ "$status" = UNAVAILABLE ] && [[ "$error" == *"reset by peer"* ]] \
    && { [ "$replica" = 1 ] || [ "$replica" = 3 ] \
      || { [ "$replica" = 2 ] && [ "$(echo "$end < $sigterm_s + 0.25" | bc)" = 1 ]; }; }; then
    age_resets=$((age_resets + 1))
    if [ "$replica" = 2 ]; then age_resets2=$((age_resets2 + 1)); fi
    echo "WARNING: request $index (replica $replica, ${start}-${end} s) reset when a max-connection-age close dropped its end: $error"
  else
    fail "request $index failed with $status ($error) on replica ${replica/#0/none} (${start}-${end} s; SIGTERM to replica 2 at ${sigterm_s} s)"
  fi
done < "$work/failed.txt"
[ "$refused_seen" -le "$refused" ] && [ "$refused" -le $((refused_seen + age_resets2)) ] \
  || fail "replica 2 logged $refused refusals (UNAVAILABLE), the bench saw $refused_seen ($age_resets2 reset)"
server_ok=0
for i in 1 2 3; do
  server_ok=$((server_ok + $(log_count "$work/server$i.log" OK)))
done
# Every request the bench completed was finished by a replica; a replica also finished the ones
# the bench cancelled at the end of its run after their last message, and those reset above.
[ "$server_ok" -ge "$completed" ] \
  || fail "the bench completed $completed Generate calls, the replicas finished only $server_ok"
[ "$server_ok" -le $((completed + cancelled + age_resets)) ] \
  || fail "the replicas finished $server_ok Generate calls, the bench completed $completed (+ $cancelled cancelled at the end, $age_resets reset)"
if [ "$age_resets" -gt 0 ] && [ -n "${VG_REHEARSAL_STRICT:-}" ]; then
  fail "VG_REHEARSAL_STRICT: $age_resets request(s) reset by a max-connection-age close"
fi

if [ $failures -ne 0 ]; then
  echo "scale_out_rehearsal: $failures problem(s)" >&2
  exit 1
fi
echo "scale_out_rehearsal: ok"
