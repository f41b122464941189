#!/usr/bin/env bash
# Validates everything under deploy/ without a cluster:
#   1. yamllint on every YAML file (deploy/yamllint.yaml);
#   2. renders each kustomization (overlays/cpu, overlays/gpu, weights) with `kubectl kustomize`
#      and validates every object against the Kubernetes OpenAPI schemas of each version in
#      K8S_VERSIONS with kubernetes-validate --strict (unknown fields are errors). Custom
#      resources have no schema there: the kinds in SKIPPED_KINDS are reported as skipped (the
#      PrometheusRule is checked by promtool below), any other missing schema is an error;
#   3. `promtool check rules` on the PrometheusRule's rule groups, and `promtool test rules`
#      with tests/deploy/alerts_test.yaml (every alert fires on its bad series and not on good);
#   4. the Grafana dashboard is JSON with a uid, a title and a PromQL query in every panel.
# kubernetes-validate (PyPI, pinned in tools/deploy/requirements.txt) is installed once into
# BUILD/deploy-venv.
#   tools/deploy/validate_manifests.sh [BUILD_DIR]       (default: build)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=$(mkdir -p "${1:-$repo/build}" && cd "${1:-$repo/build}" && pwd)
cd "$repo"
K8S_VERSIONS=${K8S_VERSIONS:-"1.30.0 1.32.0"}
SKIPPED_KINDS="monitoring.coreos.com/v1/PodMonitor monitoring.coreos.com/v1/PrometheusRule"
KUSTOMIZATIONS="deploy/k8s/overlays/cpu deploy/k8s/overlays/gpu deploy/k8s/weights"
failures=0
fail() {
  echo "validate_manifests: $*" >&2
  failures=$((failures + 1))
}
for tool in kubectl yamllint promtool jq; do
  command -v "$tool" > /dev/null || { echo "validate_manifests: $tool is not installed (make deps)" >&2; exit 1; }
done

venv=$build/deploy-venv
if ! cmp -s tools/deploy/requirements.txt "$venv/requirements.txt" 2>/dev/null; then
  echo "validate_manifests: installing kubernetes-validate into $venv"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
      -r tools/deploy/requirements.txt; then
    rm -rf "$venv"
    echo "validate_manifests: cannot install tools/deploy/requirements.txt from PyPI" >&2
    exit 1
  fi
  cp tools/deploy/requirements.txt "$venv/requirements.txt"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== yamllint"
yamllint --strict -c deploy/yamllint.yaml deploy tests/deploy || fail "yamllint"

echo "== kubectl kustomize + kubernetes-validate --strict (Kubernetes $K8S_VERSIONS)"
for k in $KUSTOMIZATIONS; do
  out=$work/$(echo "$k" | tr / _).yaml
  if ! kubectl kustomize "$k" > "$out"; then
    fail "$k does not render"
    continue
  fi
  objects=$(grep -c '^kind:' "$out")
  for version in $K8S_VERSIONS; do
    report=$work/report.txt
    if ! "$venv/bin/kubernetes-validate" --quiet --strict -k "$version" "$out" > "$report" 2>&1; then
      fail "$k is invalid for Kubernetes $version:"
      sed 's/^/    /' "$report" >&2
      continue
    fi
    skipped=()
    while read -r line; do
      kind=$(sed -n 's/.*find schema for kind \([^ ]*\) with api version \([^ ]*\) .*/\2\/\1/p' <<< "$line")
      if [ -n "$kind" ] && [[ " $SKIPPED_KINDS " == *" $kind "* ]]; then
        skipped+=("$kind")
      else
        fail "$k (Kubernetes $version): $line"
      fi
    done < <(grep -v "^[[:space:]]*$" "$report" || true)
    echo "  $k: $objects objects, $((objects - ${#skipped[@]})) valid for Kubernetes $version${skipped:+; no schema, skipped: ${skipped[*]}}"
  done
done

echo "== promtool check rules / test rules"
rules=$work/vaultgemma.rules.yaml
# The PrometheusRule's spec is a Prometheus rule file, indented by two.
awk 'found { sub(/^  /, ""); print } /^spec:/ { found = 1 }' \
  deploy/k8s/components/monitoring/prometheusrule.yaml > "$rules"
promtool check rules "$rules" || fail "promtool check rules"
cp tests/deploy/alerts_test.yaml "$work/"
(cd "$work" && promtool test rules alerts_test.yaml) || fail "promtool test rules"
# Every alert has a test.
for alert in $(sed -n 's/^ *- alert: *//p' "$rules"); do
  grep -q "alertname: $alert\$" tests/deploy/alerts_test.yaml || fail "alert $alert has no test in tests/deploy/alerts_test.yaml"
done

echo "== Grafana dashboard"
dashboard=deploy/k8s/components/monitoring/grafana-dashboard.json
if jq -e '.uid and .title and (.panels | length > 0)' "$dashboard" > /dev/null; then
  empty=$(jq '[.panels[] | select(.type != "row") | select((.targets // []) | map(.expr // "") | map(select(length > 0)) | length == 0)] | length' "$dashboard")
  [ "$empty" -eq 0 ] || fail "$dashboard: $empty panels without a query"
  echo "  $(jq '[.panels[] | select(.type != "row")] | length' "$dashboard") panels"
else
  fail "$dashboard is not a dashboard (JSON with uid, title, panels)"
fi

if [ $failures -ne 0 ]; then
  echo "validate_manifests: $failures problem(s)" >&2
  exit 1
fi
echo "validate_manifests: ok"
