#!/usr/bin/env bash
# Copies the shared libraries that the given executables or shared libraries load (as `ldd`
# resolves them here) into DIR, except
#   - the C and C++ runtimes that every target image has in a compatible or newer version
#     (glibc, libstdc++, libgcc_s);
#   - the CUDA libraries (CUDA runtime, cuBLAS, cuBLASLt, the driver's libcuda): NVIDIA's CUDA
#     runtime image carries them and the container runtime injects the host's driver, so they
#     must come from there, never from the build machine. A CUDA library that `ldd` cannot
#     resolve here is not an error for the same reason.
# The Dockerfile's cuda target uses it for the server, the CLI and the CUDA plugin: they are
# built on Debian 12 and run on NVIDIA's Ubuntu-based CUDA image.
#   tools/deploy/collect_runtime_libs.sh DIR FILE...
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 DIR FILE..." >&2
  exit 2
fi
out=$1
shift
mkdir -p "$out"
system_runtime='^(linux-vdso|ld-linux[^/]*|libc|libm|libdl|libpthread|librt|libresolv|libstdc\+\+|libgcc_s)\.so'
cuda_runtime='^(libcuda|libcudart|libcublas|libcublasLt|libnvrtc|libnvJitLink)\.so'
for file in "$@"; do
  ldd "$file" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r name path; do
    [[ $name =~ $system_runtime || $name =~ $cuda_runtime ]] && continue
    cp -L -n "$path" "$out/$name"
  done
  unresolved=$(ldd "$file" | awk '/not found/ {print $1}' | grep -Ev "$cuda_runtime" | tr '\n' ' ' || true)
  if [ -n "$unresolved" ]; then
    echo "$0: $file has unresolved libraries: $unresolved" >&2
    exit 1
  fi
done
