#!/usr/bin/env bash
# Fuzzes each harness built in BUILD_DIR/fuzz (cmake -DVG_FUZZ=ON, see `make fuzz`) for SECONDS on a
# scratch copy of its committed corpus (tests/fuzz/corpus/<harness>, never modified), one harness
# at a time. Exits 1 if any harness found a crash, a sanitizer report, a timeout (25 s per input)
# or ran out of memory; the report and the reproducer are under BUILD_DIR/fuzz-work/<harness>/.
#
#   tests/fuzz/run_fuzzers.sh BUILD_DIR SECONDS [HARNESS ...]    # default: every harness
#
# Reproduce a crash:    BUILD_DIR/fuzz/<harness> BUILD_DIR/fuzz-work/<harness>/crash-...
# Keep it as a regression: copy it to tests/fuzz/corpus/<harness>/regress-<what> (the ctest
# fuzz.<harness>.corpus in BUILD_DIR replays the committed corpus: ctest -L fuzz).
set -uo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 BUILD_DIR SECONDS [HARNESS ...]" >&2
  exit 2
fi
build="$(cd "$1" && pwd)"
seconds="$2"
shift 2
here="$(cd "$(dirname "$0")" && pwd)"
if [ $# -gt 0 ]; then
  harnesses=("$@")
else
  harnesses=()
  for dir in "${here}"/corpus/*/; do harnesses+=("$(basename "${dir}")"); done
fi

work="${build}/fuzz-work"
failed=()
summary=()
for h in "${harnesses[@]}"; do
  binary="${build}/fuzz/${h}"
  if [ ! -x "${binary}" ]; then
    echo "run_fuzzers: ${binary} is not built" >&2
    failed+=("${h}")
    continue
  fi
  rm -rf "${work:?}/${h}"
  mkdir -p "${work}/${h}/corpus" "${work}/${h}/artifacts"
  cp -R "${here}/corpus/${h}/." "${work}/${h}/corpus/"
  args=(-max_total_time="${seconds}" -timeout=25 -rss_limit_mb=4096 -print_final_stats=1
        -artifact_prefix="${work}/${h}/artifacts/")
  if [ -f "${here}/dict/${h}.dict" ]; then args+=(-dict="${here}/dict/${h}.dict"); fi
  echo "run_fuzzers: ${h} for ${seconds} s"
  "${binary}" "${args[@]}" "${work}/${h}/corpus" >"${work}/${h}/log" 2>&1
  rc=$?
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "${work}/${h}/log" | tail -1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "${work}/${h}/log" | tail -1)"
  found="$(sed -n 's/^stat::new_units_added: *//p' "${work}/${h}/log" | tail -1)"
  if [ ${rc} -eq 0 ]; then
    summary+=("$(printf '%-26s ok      %10s runs %8s exec/s %6s new inputs' "${h}" "${runs:-?}" \
      "${rate:-?}" "${found:-?}")")
  else
    failed+=("${h}")
    summary+=("$(printf '%-26s FAILED  exit %d, see %s' "${h}" "${rc}" "${work}/${h}/log")")
    echo "---- ${h}: the end of its log ----" >&2
    tail -n 60 "${work}/${h}/log" >&2
    ls -1 "${work}/${h}/artifacts" | sed "s|^|reproducer: ${work}/${h}/artifacts/|" >&2
  fi
done

echo "run_fuzzers: ${seconds} s each"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "run_fuzzers: FAILED: ${failed[*]}" >&2
  exit 1
fi
