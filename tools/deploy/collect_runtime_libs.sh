#!/usr/bin/env bash
# Copies the shared libraries that the given executables load (as `ldd` resolves them here) into
# DIR, except the C and C++ runtimes that every target image has in a compatible or newer
# version (glibc, libstdc++, libgcc_s). The Dockerfile's cuda target uses it: the binaries are
# built on Debian 12 and run on NVIDIA's Ubuntu-based CUDA image.
#   tools/deploy/collect_runtime_libs.sh DIR EXECUTABLE...
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 DIR EXECUTABLE..." >&2
  exit 2
fi
out=$1
shift
mkdir -p "$out"
system_runtime='^(linux-vdso|ld-linux[^/]*|libc|libm|libdl|libpthread|librt|libresolv|libstdc\+\+|libgcc_s)\.so'
for exe in "$@"; do
  ldd "$exe" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r name path; do
    [[ $name =~ $system_runtime ]] && continue
    cp -L -n "$path" "$out/$name"
  done
  if ldd "$exe" | grep -q "not found"; then
    echo "$0: $exe has unresolved libraries:" >&2
    ldd "$exe" | grep "not found" >&2
    exit 1
  fi
done
