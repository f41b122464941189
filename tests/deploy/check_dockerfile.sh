#!/usr/bin/env bash
# Static checks of the Dockerfile (CI has no container engine to build it):
#   - every FROM is pinned to a tag (never latest or untagged), stage names are unique, and
#     COPY --from names an earlier stage;
#   - every COPY source from the context exists and is not excluded by .dockerignore, and every
#     folder the top-level CMakeLists.txt adds is copied into the builder;
#   - the builder installs the packages of `make deps` by running tools/ci/install_deps.sh;
#   - the CUDA plugin: a cuda-builder stage FROM the builder (the server's compiler and Abseil)
#     installs nvcc, the CUDA runtime, cuBLAS and CCCL development packages pinned to versions of
#     the CUDA release (major.minor) that the cuda stage's nvidia/cuda base image carries,
#     configures with VG_ENABLE_CUDA=ON for sm_80 and sm_90a, builds the plugin target of
#     engine/backend/cuda/CMakeLists.txt and runs tools/deploy/collect_runtime_libs.sh on it; the
#     cuda stage takes its libraries from there and puts the plugin where the server looks by
#     default (../lib/ beside the directory of vaultgemma-server) and serves with --device cuda;
#     with a CUDA build (BUILD_DIR/lib/libvaultgemma_cuda.so), collect_runtime_libs.sh collects
#     every non-CUDA library the plugin needs and no CUDA library;
#   - the cpu stage's apt packages are exactly those that own a library that `ldd` reports for
#     the built vaultgemma-server and vaultgemma-cli (dpkg -S), nothing missing, nothing extra;
#   - hadolint's rules that apply here: each apt-get install with -y and
#     --no-install-recommends (DL3014, DL3015), apt lists removed in the same RUN (DL3009),
#     update and install in one RUN (DL3059-ish), no sudo (DL3004), absolute WORKDIR (DL3000),
#     COPY rather than ADD (DL3020), JSON-form ENTRYPOINT/CMD (DL3025), a pipefail SHELL (set in
#     the stage or inherited from the stage it is FROM) before piped RUNs (DL4006), and pinned
#     versions (DL3008) for the packages of NVIDIA's repository, whose names do not pin an ABI
#     the way Debian's library package names do;
#   - each runtime stage (one with an ENTRYPOINT) ends as a non-root USER with a HEALTHCHECK
#     that runs `vaultgemma-cli health`, and sets HF_HUB_OFFLINE=1.
#   tests/deploy/check_dockerfile.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
dockerfile=$src/Dockerfile
failures=0
fail() {
  echo "check_dockerfile: $*" >&2
  failures=$((failures + 1))
}

# One logical instruction per line: continuation lines joined, comments and blanks dropped.
mapfile -t instructions < <(awk '
  /^[[:space:]]*#/ && !cont { next }
  /^[[:space:]]*$/ && !cont { next }
  {
    line = $0
    if (line ~ /\\[[:space:]]*$/) { sub(/\\[[:space:]]*$/, "", line); buf = buf line " "; cont = 1; next }
    print buf line; buf = ""; cont = 0
  }' "$dockerfile")

# .dockerignore: does PATH (relative to the context) or a folder above it match an exclusion?
# Patterns are matched as shell globs with ** as *, which is close enough for this file's
# patterns; a later !pattern re-includes.
mapfile -t ignore_patterns < <(grep -v '^[[:space:]]*#' "$src/.dockerignore" | sed '/^[[:space:]]*$/d')
ignored() {
  local path=$1 result=1 prefix="" part pattern neg
  local IFS=/
  local -a parts
  read -ra parts <<< "$path"
  for part in "${parts[@]}"; do
    prefix=${prefix:+$prefix/}$part
    for pattern in "${ignore_patterns[@]}"; do
      neg=0
      if [[ $pattern == !* ]]; then neg=1; pattern=${pattern#!}; fi
      pattern=${pattern%/}
      pattern=${pattern//\*\*/\*}
      # shellcheck disable=SC2053
      if [[ $prefix == $pattern ]]; then
        if [ $neg -eq 1 ]; then result=1; else result=0; fi
      fi
    done
  done
  return $result
}

declare -A arg_default=() stage_seen=()
stage="" stages=()
declare -A stage_user=() stage_health=() stage_entry=() stage_hf_offline=() stage_packages=()
declare -A stage_copied=() stage_from=() stage_pipefail=() stage_runs=() stage_cmd=()
declare -A stage_copies=()  # stage -> lines "FROM-STAGE<TAB>DESTINATION<TAB>SOURCE..."
shell_pipefail=0
before_first_from=1
for ins in "${instructions[@]}"; do
  keyword=$(awk '{print toupper($1)}' <<< "$ins")
  rest=${ins#* }
  case $keyword in
    ARG)
      name=${rest%%=*}
      if [[ $rest == *=* ]] && [ $before_first_from -eq 1 ]; then arg_default[$name]=${rest#*=}; fi
      ;;
    FROM)
      before_first_from=0
      read -r image as name <<< "$rest"
      for a in "${!arg_default[@]}"; do image=${image//\$\{$a\}/${arg_default[$a]}}; done
      if [[ -n ${stage_seen[$image]:-} ]]; then
        :  # FROM an earlier stage
      elif [[ $image != *:* ]]; then
        fail "FROM $image has no tag (pin one)"
      elif [[ ${image##*:} == latest ]]; then
        fail "FROM $image uses latest (pin a version)"
      fi
      [[ ${as^^} == AS && -n $name ]] || { fail "FROM $image has no stage name"; name=unnamed; }
      [[ -z ${stage_seen[$name]:-} ]] || fail "stage $name defined twice"
      stage=$name
      stage_seen[$name]=1
      stages+=("$name")
      stage_from[$name]=$image
      # A stage FROM an earlier one inherits its SHELL.
      shell_pipefail=${stage_pipefail[$image]:-0}
      stage_pipefail[$name]=$shell_pipefail
      ;;
    SHELL)
      shell_pipefail=0
      [[ $rest == *pipefail* ]] && shell_pipefail=1
      stage_pipefail[$stage]=$shell_pipefail
      ;;
    WORKDIR)
      [[ $rest == /* ]] || fail "WORKDIR $rest is not absolute (DL3000)"
      ;;
    ADD)
      fail "ADD $rest: use COPY (DL3020)"
      ;;
    COPY)
      read -ra words <<< "$rest"
      from=""
      sources=()
      for w in "${words[@]}"; do
        case $w in
          --from=*) from=${w#--from=} ;;
          --*) ;;
          *) sources+=("$w") ;;
        esac
      done
      dest=${sources[-1]}
      unset 'sources[${#sources[@]}-1]'
      if [ -n "$from" ]; then
        [[ -n ${stage_seen[$from]:-} ]] || fail "COPY --from=$from: no earlier stage named $from"
        stage_copies[$stage]+="$from"$'\t'"$dest"$'\t'"${sources[*]}"$'\n'
        continue
      fi
      for s in "${sources[@]}"; do
        s=${s#./}
        s=${s%/}
        if [ ! -e "$src/$s" ]; then
          fail "COPY $s: not in the build context"
        elif ignored "$s"; then
          fail "COPY $s: excluded by .dockerignore"
        fi
        stage_copied[$stage]+=" $s "
      done
      ;;
    RUN)
      stage_runs[$stage]+="$rest"$'\n'
      [[ $rest != *sudo* ]] || fail "$stage: RUN uses sudo (DL3004)"
      if [[ $rest == *'|'* && $rest != *'||'* && $shell_pipefail -eq 0 ]]; then
        fail "$stage: RUN with a pipe but no SHELL with -o pipefail (DL4006)"
      fi
      if [[ $rest == *"apt-get install"* ]]; then
        [[ $rest == *"apt-get update"* ]] || fail "$stage: apt-get install without apt-get update in the same RUN (DL3059)"
        [[ $rest == *"rm -rf /var/lib/apt/lists/*"* ]] || fail "$stage: apt lists not removed in the same RUN (DL3009)"
        # Each install: its words up to the next &&; the packages are those that are not options
        # (NAME or NAME=VERSION).
        after=$rest
        while [[ $after == *"apt-get install"* ]]; do
          after=${after#*apt-get install}
          read -ra words <<< "${after%%&&*}"
          [[ " ${words[*]} " == *" --no-install-recommends "* ]] \
            || fail "$stage: apt-get install without --no-install-recommends (DL3015)"
          [[ " ${words[*]} " =~ \ (-[a-z]*y|--yes)\  ]] \
            || fail "$stage: apt-get install without -y (DL3014)"
          for w in "${words[@]}"; do
            [[ $w == -* ]] || stage_packages[$stage]+="$w"$'\n'
          done
        done
      fi
      [[ $rest == *"tools/ci/install_deps.sh"* ]] && stage_packages[$stage]+="@make-deps"$'\n'
      ;;
    USER)
      stage_user[$stage]=${rest%%:*}
      ;;
    HEALTHCHECK)
      stage_health[$stage]=$rest
      ;;
    ENTRYPOINT|CMD)
      [[ $rest == \[* ]] || fail "$stage: $keyword $rest is not in JSON form (DL3025)"
      [ "$keyword" = ENTRYPOINT ] && stage_entry[$stage]=$rest
      [ "$keyword" = CMD ] && stage_cmd[$stage]=$rest
      ;;
    ENV)
      [[ $rest == *HF_HUB_OFFLINE=1* ]] && stage_hf_offline[$stage]=1
      ;;
  esac
done

[[ ${stages[0]:-} == builder ]] || fail "the first stage must be the builder"
[[ ${stage_packages[builder]:-} == *@make-deps* ]] \
  || fail "the builder does not run tools/ci/install_deps.sh (the packages of make deps)"
for dir in $(sed -n 's/^add_subdirectory(\([^ )]*\).*/\1/p' "$src/CMakeLists.txt"); do
  [[ ${stage_copied[builder]:-} == *" $dir "* ]] || fail "the builder does not COPY $dir (add_subdirectory in CMakeLists.txt)"
done
[[ ${stage_copied[builder]:-} == *" CMakeLists.txt "* ]] || fail "the builder does not COPY CMakeLists.txt"
for required in cpu cuda; do
  [[ -n ${stage_seen[$required]:-} ]] || fail "no $required stage"
done
[[ ${stages[-1]:-} == cpu ]] || fail "the last stage (the default target) must be cpu"

# The CUDA plugin: built in cuda-builder, shipped by cuda.
plugin_file=$(sed -n 's/.*kCudaPluginFileName\[\] = "\([^"]*\)".*/\1/p' "$src/engine/backend/cuda_plugin_loader.h")
plugin_target=$(sed -n 's/^add_library(\([A-Za-z0-9_]*\) SHARED.*/\1/p' "$src/engine/backend/cuda/CMakeLists.txt")
[ -n "$plugin_file" ] || fail "no kCudaPluginFileName in engine/backend/cuda_plugin_loader.h"
[ -n "$plugin_target" ] || fail "no SHARED library (the plugin) in engine/backend/cuda/CMakeLists.txt"
cuda_image=${stage_from[cuda]:-}
cuda_release=""  # major.minor of the cuda stage's base image, e.g. 13.0
if [[ $cuda_image =~ ^nvidia/cuda:([0-9]+)\.([0-9]+)\.[0-9]+-runtime- ]]; then
  cuda_release=${BASH_REMATCH[1]}.${BASH_REMATCH[2]}
else
  fail "the cuda stage is not FROM a pinned nvidia/cuda:X.Y.Z-runtime-... image (got '$cuda_image')"
fi
if [[ -z ${stage_seen[cuda-builder]:-} ]]; then
  fail "no cuda-builder stage (it builds the CUDA plugin $plugin_file)"
else
  [[ ${stage_from[cuda-builder]} == builder ]] \
    || fail "cuda-builder is FROM ${stage_from[cuda-builder]}, not builder" \
      "(the plugin must share the server's compiler and Abseil)"
  declare -A cuda_pkg_seen=()
  while read -r p; do
    [ -n "$p" ] || continue
    name=${p%%=*}
    [[ $name =~ ^(cuda-|libcublas|libnv) ]] || continue
    [[ $p == *=?* ]] || fail "cuda-builder: $name is not pinned to a version (DL3008; NVIDIA's repository moves)"
    [[ -z $cuda_release || $name == *-${cuda_release/./-} ]] \
      || fail "cuda-builder: $name is not for CUDA $cuda_release, the release of the cuda stage's $cuda_image"
    cuda_pkg_seen[${name%-[0-9]*-[0-9]*}]=1
  done <<< "${stage_packages[cuda-builder]:-}"
  for needed_pkg in cuda-nvcc cuda-cudart-dev libcublas-dev cuda-cccl; do
    [[ -n ${cuda_pkg_seen[$needed_pkg]:-} ]] \
      || fail "cuda-builder: does not install $needed_pkg-${cuda_release/./-} (the plugin build needs it)"
  done
  build_run=$(grep -- "--target $plugin_target" <<< "${stage_runs[cuda-builder]:-}" || true)
  if [ -z "$build_run" ]; then
    fail "cuda-builder: no RUN builds the plugin target ($plugin_target)"
  else
    [[ $build_run == *-DVG_ENABLE_CUDA=ON* ]] || fail "cuda-builder: the plugin build does not set -DVG_ENABLE_CUDA=ON"
    archs=$(sed -n 's/.*-DCMAKE_CUDA_ARCHITECTURES="*\([^" ]*\).*/\1/p' <<< "$build_run")
    for arch in 80 90a; do
      [[ ";$archs;" == *";$arch;"* ]] || fail "cuda-builder: CMAKE_CUDA_ARCHITECTURES ('$archs') lacks $arch"
    done
    nvcc_path=$(sed -n 's/.*-DCMAKE_CUDA_COMPILER=\([^ ]*\).*/\1/p' <<< "$build_run")
    [[ -z $nvcc_path || -z $cuda_release || $nvcc_path == */cuda-$cuda_release/* ]] \
      || fail "cuda-builder: CMAKE_CUDA_COMPILER $nvcc_path is not CUDA $cuda_release's"
    [[ $build_run =~ collect_runtime_libs\.sh\ +/out/lib\ .*$plugin_file ]] \
      || fail "cuda-builder: the plugin's libraries are not collected into /out/lib" \
        "(tools/deploy/collect_runtime_libs.sh)"
  fi
fi
# In the cuda stage: the libraries from cuda-builder, the plugin at <server dir>/../lib/.
server_dir="" plugin_dest="" libs_from=""
while IFS=$'\t' read -r from dest sources; do
  [ -n "$from" ] || continue
  for source in $sources; do
    case ${source##*/} in
      vaultgemma-server) server_dir=${dest%/} ;;
      "$plugin_file")
        plugin_dest=$dest
        [[ $dest == */ ]] && plugin_dest=$dest$plugin_file
        [ "$from" = cuda-builder ] || fail "cuda: the plugin comes from $from, not cuda-builder"
        ;;
    esac
    [ "$dest" = /opt/vaultgemma/lib ] && libs_from=$from
  done
done <<< "${stage_copies[cuda]:-}"
[ "$libs_from" = cuda-builder ] \
  || fail "cuda: /opt/vaultgemma/lib does not come from cuda-builder (the plugin's libraries are collected there)"
if [ -z "$plugin_dest" ]; then
  fail "cuda: the plugin $plugin_file is not copied into the image"
elif [ -n "$server_dir" ] && [ "$plugin_dest" != "${server_dir%/*}/lib/$plugin_file" ]; then
  fail "cuda: the plugin is at $plugin_dest, the server looks at ${server_dir%/*}/lib/$plugin_file" \
    "(../lib from $server_dir, engine/backend/cuda_plugin_loader.cc)"
fi
[[ ${stage_cmd[cuda]:-} =~ \"--device\",\ *\"cuda ]] || fail "cuda: the default CMD does not serve with --device cuda"

for s in "${stages[@]}"; do
  [[ -n ${stage_entry[$s]:-} ]] || continue
  user=${stage_user[$s]:-root}
  [[ $user != root && $user != 0 ]] || fail "$s: runs as root (add a non-root USER)"
  [[ ${stage_health[$s]:-} == *vaultgemma-cli*health* ]] || fail "$s: no HEALTHCHECK running vaultgemma-cli health"
  [[ -n ${stage_hf_offline[$s]:-} ]] || fail "$s: HF_HUB_OFFLINE=1 is not set"
done

# The cpu stage's packages against the libraries the binaries load. dpkg -S needs the path as
# the package installed it: with usrmerge /lib and /usr/lib are one, so ask for every spelling,
# all in one dpkg call (it is slow to start).
declare -A lib_user=() owner_of=()
for exe in vaultgemma-server vaultgemma-cli; do
  bin=$build/bin/$exe
  [ -x "$bin" ] || { fail "$bin is not built"; continue; }
  if ldd "$bin" | grep -q "not found"; then fail "$exe: unresolved libraries"; fi
  while read -r lib path; do
    lib_user[$path]+=" $exe:$lib"
  done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}')
done
spellings() {
  local real
  real=$(readlink -f "$1")
  printf '%s\n' "$1" "/usr$1" "${1#/usr}" "$real" "/usr$real" "${real#/usr}"
}
candidates=()
for path in "${!lib_user[@]}"; do mapfile -t -O ${#candidates[@]} candidates < <(spellings "$path"); done
while IFS= read -r line; do
  owner_of[${line#*: }]=${line%%:*}
done < <(dpkg -S "${candidates[@]}" 2> /dev/null | sed 's/^\([^:,]*\)\(:[a-z0-9]*\)\{0,1\}: /\1: /' || true)
declare -A needed=()
for path in "${!lib_user[@]}"; do
  owner=""
  while IFS= read -r candidate; do
    owner=${owner_of[$candidate]:-}
    [ -n "$owner" ] && break
  done < <(spellings "$path")
  if [ -n "$owner" ]; then
    needed[$owner]+="${lib_user[$path]}"
  else
    fail "no Debian package owns $path (${lib_user[$path]# })"
  fi
done
declare -A listed=()
while read -r p; do [ -n "$p" ] && listed[$p]=1; done <<< "${stage_packages[cpu]:-}"
for p in "${!needed[@]}"; do
  [[ -n ${listed[$p]:-} ]] || fail "cpu stage: package $p is missing (for$(tr ' ' '\n' <<< "${needed[$p]}" | sort -u | tr '\n' ' '))"
done
for p in "${!listed[@]}"; do
  [[ -n ${needed[$p]:-} ]] || fail "cpu stage: package $p provides no library the binaries load"
done

# With a CUDA build: what collect_runtime_libs.sh gathers for the cuda image has every non-CUDA
# library the plugin needs and no CUDA library (those come from the runtime image and the host).
plugin_built=$build/lib/$plugin_file
plugin_note="no CUDA build, plugin libraries not checked"
if [ -n "$plugin_file" ] && [ -f "$plugin_built" ]; then
  collected=$(mktemp -d)
  if "$src/tools/deploy/collect_runtime_libs.sh" "$collected/lib" "$build/bin/vaultgemma-server" \
      "$build/bin/vaultgemma-cli" "$plugin_built" > "$collected/log" 2>&1; then
    cuda_libs='^(libcuda|libcudart|libcublas|libcublasLt|libnvrtc|libnvJitLink)\.so'
    system_libs='^(ld-linux[^/]*|libc|libm|libdl|libpthread|librt|libresolv|libstdc\+\+|libgcc_s)\.so'
    for lib in "$collected"/lib/*; do
      [[ ! ${lib##*/} =~ $cuda_libs ]] || fail "collect_runtime_libs.sh copies the CUDA library ${lib##*/}"
    done
    for lib in $(readelf -d "$plugin_built" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
      [[ $lib =~ $cuda_libs || $lib =~ $system_libs || -f $collected/lib/$lib ]] \
        || fail "collect_runtime_libs.sh does not collect $lib, which $plugin_file needs"
    done
    plugin_note="plugin libraries checked"
  else
    fail "collect_runtime_libs.sh failed on the server, the CLI and $plugin_built: $(cat "$collected/log")"
  fi
  rm -rf "$collected"
fi

if [ $failures -ne 0 ]; then
  echo "check_dockerfile: $failures problem(s)" >&2
  exit 1
fi
echo "check_dockerfile: ok (${#stages[@]} stages: ${stages[*]}; cpu runtime packages: ${#listed[@]}; $plugin_note)"
