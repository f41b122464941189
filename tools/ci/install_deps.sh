#!/usr/bin/env bash
# Installs every Debian package the build, the tests and the tools need. Idempotent: when all
# packages are present it returns without touching apt. Uses sudo when not root.
set -euo pipefail

packages=(
  # build
  cmake ninja-build g++ make pkg-config
  # sanitizers, formatting, linting
  clang libclang-rt-14-dev clang-format clang-tidy
  # libraries (TOOLCHAIN.md)
  libabsl-dev nlohmann-json3-dev libhwy-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler prometheus-cpp-dev
  # tests and benchmarks
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  # promtool, to lint the /metrics exposition (the Prometheus server itself is not started)
  prometheus
  # deployment checks (tests/deploy): yamllint, jq, and a venv for kubernetes-validate (PyPI)
  yamllint jq python3-venv
  # the SentencePiece reference tools (spm_train, spm_encode, spm_decode), run as separate processes
  sentencepiece
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "install_deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
