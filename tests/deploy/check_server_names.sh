#!/usr/bin/env bash
# Cross-checks the deployment against the real server: what the manifests, the dashboard, the
# alert rules, the Prometheus Adapter rule, the Dockerfile and the README section name must exist
# in `vaultgemma-server --help` and in a live /metrics scrape.
#   flags    every --flag in each overlay's container args is in --help; every $(VAR) in them is
#            a key of the flags ConfigMap and every key is used; the server's parser accepts the
#            overlay's values as deployed, and the server starts and serves with them on a
#            committed fixture (ports, threads and KV pool replaced). The gpu overlay runs with
#            --device cpu (CI has no GPU); that --device cuda is then refused with exit code 2
#            and one line naming what is missing (the plugin, the driver or a device) is
#            asserted;
#   ports    --listen and --metrics-port are the named container ports grpc and metrics, every
#            probe targets the grpc port, Services, NetworkPolicy and PodMonitor name ports the
#            container has, and the Dockerfile exposes and health-checks the server's defaults;
#   timing   terminationGracePeriodSeconds > preStop + --drain-timeout + 5 s (the server's final
#            shutdown); --max-connection-age-grace >= --drain-timeout (both cover the longest
#            generation); the startup probe waits at least 5 minutes for the weights;
#   metrics  every vaultgemma_* name is exported (histograms as _bucket/_sum/_count), every label
#            a selector or a `by (...)` uses exists on the scrape (or is a target label Prometheus
#            adds), and label values of code / method / finish_reason are ones the server emits.
#   tests/deploy/check_server_names.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
cd "$src"
server=$build/bin/vaultgemma-server
cli=$build/bin/vaultgemma-cli
fixture=tests/fixtures/f32_mha_tied_sliding
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2> /dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
failures=0
fail() {
  echo "check_server_names: $*" >&2
  failures=$((failures + 1))
}

# start_server LOG ARGS...: starts the server, waits until it serves; sets $port, $metrics_port.
start_server() {
  local log=$1
  shift
  "$server" "$@" 2> "$log" &
  pids+=($!)
  local pid=$! i
  port="" metrics_port=""
  for i in $(seq 1 200); do
    port=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$log" | head -n 1)
    [ -n "$port" ] && break
    if ! kill -0 "$pid" 2> /dev/null; then
      wait "$pid" || true
      return 1
    fi
    sleep 0.05
  done
  metrics_port=$(sed -n 's/.*(metrics port \([0-9]*\)).*/\1/p' "$log" | head -n 1)
  [ -n "$port" ]
}
stop_server() {
  kill -TERM "${pids[-1]}"
  wait "${pids[-1]}"
  unset 'pids[-1]'
}

# ---- the server's own names ----------------------------------------------------------------
"$server" --help > "$work/help.txt"
mapfile -t server_flags < <(grep -oE '^ +--[a-z0-9-]+' "$work/help.txt" | tr -d ' ' | sort -u)
has_flag() { [[ " ${server_flags[*]} " == *" $1 "* ]]; }
default_grpc_port=$(sed -n 's/.*--listen HOST:PORT *default [^:]*:\([0-9]*\).*/\1/p' "$work/help.txt")
default_metrics_port=$(grep -A1 -- '--metrics-port N' "$work/help.txt" | sed -n 's/.*default \([0-9]*\).*/\1/p')
[ -n "$default_grpc_port" ] && [ -n "$default_metrics_port" ] \
  || fail "cannot read the default ports from --help"

start_server "$work/scrape-server.log" --model "$fixture" --listen 127.0.0.1:0 --metrics-port 0 \
  --threads 1 || { cat "$work/scrape-server.log" >&2; exit 1; }
"$cli" generate --server "127.0.0.1:$port" --prompt hi --max-new-tokens 2 > /dev/null
"$cli" tokenize --server "127.0.0.1:$port" --text hi > /dev/null
curl -fsS "http://127.0.0.1:$metrics_port/metrics" > "$work/scrape.txt"
stop_server
# Sample names (histograms already appear as _bucket/_sum/_count) and, per name, its labels.
grep -v '^#' "$work/scrape.txt" | sed -n 's/^\(vaultgemma_[a-z0-9_]*\).*/\1/p' | sort -u > "$work/names.txt"
grep -v '^#' "$work/scrape.txt" | grep '^vaultgemma_' |
  sed -n 's/^\([a-z0-9_]*\){\(.*\)} .*/\1 \2/p' |
  while read -r name labels; do
    grep -oE '[a-z_]+="[^"]*"' <<< "$labels" | while IFS== read -r key value; do
      echo "$name $key ${value//\"/}"
    done
  done | sort -u > "$work/labels.txt"
# Histogram families: their _bucket carries le; the family name covers all three series.
sed -n 's/^# TYPE \(vaultgemma_[a-z0-9_]*\) histogram/\1/p' "$work/scrape.txt" > "$work/histograms.txt"
echo "server: ${#server_flags[@]} flags, $(wc -l < "$work/names.txt") metric series names"

# ---- manifests -------------------------------------------------------------------------------
# split_docs FILE DIR: one file per object, named Kind_name.
split_docs() {
  mkdir -p "$2"
  awk -v dir="$2" '
    function flush() { if (text != "") { f = dir "/" kind "_" name ".yaml"; printf "%s", text > f; close(f) } text = ""; kind = ""; name = "" }
    /^---$/ { flush(); next }
    { text = text $0 "\n" }
    /^kind: / { kind = $2 }
    /^  name: / && name == "" && inmeta { name = $2 }
    /^metadata:/ { inmeta = 1; next }
    /^[^ ]/ { inmeta = 0 }
    END { flush() }' "$1"
}
# yaml_list FILE KEY: the items of the first block list under "KEY:" (kustomize's rendering:
# items at the key's own column, also when the key opens a list item: "- args:").
yaml_list() {
  awk -v key="$2" '
    !found && $0 ~ "^ *(- )?" key ":$" { found = 1; ind = index($0, key ":") - 1; next }
    found == 1 {
      if (substr($0, 1, ind + 2) == sprintf("%" ind "s- ", "")) { print substr($0, ind + 3); next }
      exit
    }' "$1"
}

for overlay in cpu gpu; do
  dir=$work/$overlay
  kubectl kustomize "deploy/k8s/overlays/$overlay" > "$work/$overlay.yaml"
  split_docs "$work/$overlay.yaml" "$dir"
  deployment=$dir/Deployment_vaultgemma-server.yaml
  configmap=$(ls "$dir"/ConfigMap_vaultgemma-server-flags-*.yaml)
  declare -A config=()
  while IFS= read -r line; do
    key=${line%%:*}
    value=${line#*: }
    value=${value#\"}
    value=${value%\"}
    config[$key]=$value
  done < <(sed -n 's/^  \(VG_[A-Z0-9_]*: .*\)/\1/p' "$configmap")

  # Flags.
  declare -A flag=()
  args=()
  while IFS= read -r arg; do
    name=${arg%%=*}
    value=""
    [[ $arg == *=* ]] && value=${arg#*=}
    has_flag "$name" || fail "$overlay: $name is not a vaultgemma-server flag"
    while [[ $value =~ \$\(([A-Za-z0-9_]+)\) ]]; do
      var=${BASH_REMATCH[1]}
      if [[ -z ${config[$var]+x} ]]; then
        fail "$overlay: $name uses \$($var), which the flags ConfigMap does not define"
        break
      fi
      value=${value//\$($var)/${config[$var]}}
    done
    flag[$name]=$value
    args+=("$name=$value")
  done < <(yaml_list "$deployment" args)
  [ ${#args[@]} -gt 0 ] || fail "$overlay: no args for the server container"
  for key in "${!config[@]}"; do
    grep -q "\$($key)" "$deployment" || fail "$overlay: ConfigMap key $key is passed to no flag"
  done

  # The flags, values substituted, against the real parser: every value as deployed, with a
  # model directory that does not exist (flags are checked before the model is looked up), then
  # a real start on the fixture with its ports, threads and KV pool replaced.
  parse_args=() run_args=()
  for arg in "${args[@]}"; do
    case ${arg%%=*} in
      --model) parse_args+=("--model=$work/no-model"); run_args+=("--model=$fixture") ;;
      --listen) parse_args+=("$arg"); run_args+=("--listen=127.0.0.1:0") ;;
      --metrics-port) parse_args+=("$arg"); run_args+=("--metrics-port=0") ;;
      --threads) parse_args+=("$arg"); run_args+=("--threads=1") ;;
      --kv-cache-bytes) parse_args+=("$arg"); run_args+=("--kv-cache-bytes=0") ;;
      --device)
        [ "$overlay" = gpu ] && arg=--device=cpu
        parse_args+=("$arg"); run_args+=("$arg") ;;
      *) parse_args+=("$arg"); run_args+=("$arg") ;;
    esac
  done
  if "$server" "${parse_args[@]}" > /dev/null 2> "$work/$overlay-parse.log" \
      || ! grep -q "$work/no-model: no such directory" "$work/$overlay-parse.log"; then
    fail "$overlay: the server refuses the overlay's flags: $(cat "$work/$overlay-parse.log")"
  fi
  if start_server "$work/$overlay-server.log" "${run_args[@]}"; then
    "$cli" health --server "127.0.0.1:$port" > /dev/null || fail "$overlay: the server with the overlay's flags is not SERVING"
    stop_server
  else
    fail "$overlay: the server with the overlay's flags (${run_args[*]}) does not start:"
    cat "$work/$overlay-server.log" >&2
  fi
  if [ "$overlay" = gpu ]; then
    [ "${flag[--device]:-}" = cuda ] || fail "gpu: --device is not cuda"
    if nvidia-smi -L > /dev/null 2>&1; then
      echo "gpu: this machine has a CUDA device; the no-device refusal is not checked here"
    else
      rc=0
      "$server" --model "$fixture" --device cuda --listen 127.0.0.1:0 --no-metrics \
        2> "$work/cuda.log" > /dev/null || rc=$?
      if [ "$rc" != 2 ] || [ "$(wc -l < "$work/cuda.log")" != 1 ] \
          || ! grep -Eq -- "--device cuda: (cannot load the CUDA plugin|no CUDA driver|no CUDA device)" "$work/cuda.log"; then
        fail "gpu: --device cuda without a GPU: expected exit 2 and one line naming the missing plugin, driver or device, got exit $rc: $(cat "$work/cuda.log")"
      fi
    fi
  fi

  # Ports.
  grpc_port=${flag[--listen]##*:}
  [ "$grpc_port" = "$default_grpc_port" ] || fail "$overlay: --listen port $grpc_port is not the server's default $default_grpc_port"
  [ "${flag[--metrics-port]:-}" = "$default_metrics_port" ] || fail "$overlay: --metrics-port ${flag[--metrics-port]:-} is not the server's default $default_metrics_port"
  declare -A container_port=()
  while read -r name number; do container_port[$name]=$number; done < <(
    awk '/^ *- containerPort: / { p = $3 } /^ *name: / && p != "" { print $2, p; p = "" }' "$deployment")
  [ "${container_port[grpc]:-}" = "$grpc_port" ] || fail "$overlay: container port grpc is ${container_port[grpc]:-missing}, --listen uses $grpc_port"
  [ "${container_port[metrics]:-}" = "${flag[--metrics-port]:-}" ] || fail "$overlay: container port metrics is ${container_port[metrics]:-missing}, --metrics-port is ${flag[--metrics-port]:-}"
  for probe in startupProbe readinessProbe livenessProbe; do
    probe_port=$(awk -v p="$probe" '$1 == p ":" { f = 1; next } f && $1 == "port:" { print $2; exit } f && /^ {0,8}[a-z]/ { exit }' "$deployment")
    awk -v p="$probe" '$1 == p ":" { f = 1; next } f && $1 == "grpc:" { ok = 1 } f && /^ {0,8}[a-z]/ { exit } END { exit !ok }' "$deployment" \
      || fail "$overlay: $probe is not a gRPC probe"
    [ "$probe_port" = "$grpc_port" ] || fail "$overlay: $probe targets port ${probe_port:-none}, the server listens on $grpc_port"
  done
  for f in "$dir"/Service_*.yaml "$dir"/NetworkPolicy_*.yaml "$dir"/PodMonitor_*.yaml; do
    for name in $(sed -n 's/^ *\(- \)\{0,1\}\(targetPort\|port\): \([a-z][a-z0-9-]*\)$/\3/p' "$f"); do
      [[ -n ${container_port[$name]:-} ]] || fail "$overlay: $(basename "$f" .yaml) names port $name, which the container does not have"
    done
  done
  grep -q "service: vaultgemma.v1.TextGeneration" "$deployment" \
    || fail "$overlay: readiness does not check the vaultgemma.v1.TextGeneration health service"

  # Timing.
  grace_period=$(sed -n 's/^ *terminationGracePeriodSeconds: //p' "$deployment")
  pre_stop=$(awk '/preStop:/ { f = 1 } f && /seconds:/ { print $2; exit }' "$deployment")
  drain=${flag[--drain-timeout]%.*}
  if [ -z "$grace_period" ] || [ -z "$pre_stop" ] || [ -z "$drain" ]; then
    fail "$overlay: terminationGracePeriodSeconds, preStop sleep or --drain-timeout missing"
  elif [ "$grace_period" -le $((pre_stop + drain + 5)) ]; then
    fail "$overlay: terminationGracePeriodSeconds $grace_period <= preStop $pre_stop + drain $drain + 5"
  fi
  age_grace=${flag[--max-connection-age-grace]:-0}
  [ "${flag[--max-connection-age]:-0}" -gt 0 ] || fail "$overlay: no --max-connection-age (clients behind the headless Service would never rebalance)"
  [ "$age_grace" -ge "$drain" ] || fail "$overlay: --max-connection-age-grace $age_grace < --drain-timeout $drain"
  startup=$(awk '/startupProbe:/ { f = 1 } f && /failureThreshold:/ { t = $2 } f && /periodSeconds:/ { p = $2 } f && t && p { print t * p; exit }' "$deployment")
  [ "${startup:-0}" -ge 300 ] || fail "$overlay: the startup probe gives up after ${startup:-0} s (< 300 s to load weights)"
  echo "$overlay: ${#args[@]} flags, ports grpc=$grpc_port metrics=${flag[--metrics-port]}, grace $grace_period s > preStop $pre_stop + drain $drain + 5"
  unset config flag container_port
done

# Dockerfile: exposes and health-checks the server's default ports.
for p in "$default_grpc_port" "$default_metrics_port"; do
  grep -qE "^EXPOSE .*\b$p\b" Dockerfile || fail "Dockerfile does not EXPOSE $p"
done
grep -q "vaultgemma-cli\", \"health\", \"--server\", \"127.0.0.1:$default_grpc_port\"" Dockerfile \
  || fail "Dockerfile HEALTHCHECK does not query 127.0.0.1:$default_grpc_port"

# ---- metric names and labels -----------------------------------------------------------------
# PromQL and metric names from every place that uses them.
jq -r '.. | .expr? // empty' deploy/k8s/components/monitoring/grafana-dashboard.json > "$work/dashboard.promql"
jq -r '.templating.list[] | .definition? // empty' deploy/k8s/components/monitoring/grafana-dashboard.json >> "$work/dashboard.promql"
sources=("$work/cpu.yaml" "$work/gpu.yaml" "$work/dashboard.promql" deploy/prometheus-adapter/values.yaml
         tests/deploy/alerts_test.yaml)
sources+=(README.md)
target_labels=" namespace pod job instance container endpoint service "
code_names=" OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS PERMISSION_DENIED RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS UNAUTHENTICATED "
metric_family() {  # a series name -> its histogram family, or itself
  local n=$1 base
  for suffix in _bucket _sum _count; do
    base=${n%"$suffix"}
    if [ "$base" != "$n" ] && grep -qx "$base" "$work/histograms.txt"; then echo "$base"; return; fi
  done
  echo "$n"
}
# Each name, selector and aggregation once, with the first file that uses it.
mkdir -p "$work/normalized"
: > "$work/uses.txt"
for source in "${sources[@]}"; do
  # JSON inside YAML (the dashboard ConfigMap) escapes its quotes; a selector may span lines.
  f=$work/normalized/$(basename "$source")
  sed 's/\\"/"/g' "$source" | tr '\n' ' ' | tr -s ' ' > "$f"
  # (libvaultgemma_cuda.so, the plugin, is a file name, not a metric.)
  { grep -oE '(lib)?vaultgemma_[a-z0-9_]+(\{[^}]*\})?|by \([a-z_, ]+\)' "$f" || true; } |
    { grep -v '^libvaultgemma_' || true; } |
    sed "s|^|$(basename "$source")\t|" >> "$work/uses.txt"
done
sort -t "$(printf '\t')" -k2,2 -u "$work/uses.txt" > "$work/uses-unique.txt"
checked=0
while IFS=$'\t' read -r file use; do
  case $use in
    by\ *)
      for label in $(sed -E 's/by \(([^)]*)\)/\1/' <<< "$use" | tr ', ' '\n\n'); do
        [ "$label" = le ] && continue
        [[ $target_labels == *" $label "* ]] && continue
        grep -q "^vaultgemma_[a-z0-9_]* $label " "$work/labels.txt" \
          || fail "$file: by ($label): no vaultgemma metric has the label $label"
      done
      continue
      ;;
  esac
  name=${use%%\{*}
  checked=$((checked + 1))
  if ! grep -qx "$name" "$work/names.txt" && ! grep -qx "$name" "$work/histograms.txt"; then
    fail "$file: metric $name is not exported by the server"
    continue
  fi
  [[ $use == *\{* ]] || continue
  body=${use#*\{}
  body=${body%\}}
  [[ $body == *'<<'* ]] && continue  # a Prometheus Adapter template
  while IFS= read -r matcher; do
    [ -n "$matcher" ] || continue
    label=${matcher%%[!a-z_]*}
    value=${matcher#*\"}
    value=${value%\"}
    [ "$label" = le ] && continue
    [[ $target_labels == *" $label "* ]] && continue
    if ! grep -q "^$name $label " "$work/labels.txt" &&
       ! grep -q "^$(metric_family "$name")_bucket $label " "$work/labels.txt"; then
      fail "$file: $name has no label $label"
      continue
    fi
    [[ $value == *'$'* || -z $value ]] && continue  # a Grafana variable or an empty match
    for v in $(tr '|' ' ' <<< "$value"); do
      v=${v//[()^\$]/}
      [[ $v == *'.'* || $v == *'*'* ]] && continue  # a regex, not a value
      if [ "$label" = code ]; then
        [[ $code_names == *" $v "* ]] || fail "$file: $name{code=\"$v\"} is not a gRPC code name"
      elif ! grep -q "^$name $label $v\$" "$work/labels.txt"; then
        fail "$file: $name{$label=\"$v\"}: the server emits no such value"
      fi
    done
  done < <(grep -oE '[a-z_]+ *(=~|!~|!=|=) *"[^"]*"' <<< "$body" || true)
done < "$work/uses-unique.txt"
echo "metrics: $checked distinct names and selectors checked in ${#sources[@]} files"

if [ $failures -ne 0 ]; then
  echo "check_server_names: $failures problem(s)" >&2
  exit 1
fi
echo "check_server_names: ok"
