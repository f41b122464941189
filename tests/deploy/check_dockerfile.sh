#!/usr/bin/env bash
# Static checks of the Dockerfile (CI has no container engine to build it):
#   - every FROM is pinned to a tag (never latest or untagged), stage names are unique, and
#     COPY --from names an earlier stage;
#   - every COPY source from the context exists and is not excluded by .dockerignore, and every
#     folder the top-level CMakeLists.txt adds is copied into the builder;
#   - the builder installs the packages of `make deps` by running tools/ci/install_deps.sh;
#   - the cpu stage's apt packages are exactly those that own a library that `ldd` reports for
#     the built vaultgemma-server and vaultgemma-cli (dpkg -S), nothing missing, nothing extra;
#   - hadolint's rules that apply here: apt-get install with -y and --no-install-recommends
#     (DL3015), apt lists removed in the same RUN (DL3009), update and install in one RUN
#     (DL3059-ish), no sudo (DL3004), absolute WORKDIR (DL3000), COPY rather than ADD (DL3020),
#     JSON-form ENTRYPOINT/CMD (DL3025), a pipefail SHELL before piped RUNs (DL4006);
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
declare -A stage_copied=()
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
      shell_pipefail=0
      ;;
    SHELL)
      [[ $rest == *pipefail* ]] && shell_pipefail=1
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
      unset 'sources[${#sources[@]}-1]'  # the destination
      if [ -n "$from" ]; then
        [[ -n ${stage_seen[$from]:-} ]] || fail "COPY --from=$from: no earlier stage named $from"
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
      [[ $rest != *sudo* ]] || fail "$stage: RUN uses sudo (DL3004)"
      if [[ $rest == *'|'* && $rest != *'||'* && $shell_pipefail -eq 0 ]]; then
        fail "$stage: RUN with a pipe but no SHELL with -o pipefail (DL4006)"
      fi
      if [[ $rest == *"apt-get install"* ]]; then
        [[ $rest == *"--no-install-recommends"* ]] || fail "$stage: apt-get install without --no-install-recommends (DL3015)"
        [[ $rest =~ install\ +(-[a-z]*y|--yes|-y) || $rest == *" -y "* ]] || fail "$stage: apt-get install without -y (DL3014)"
        [[ $rest == *"apt-get update"* ]] || fail "$stage: apt-get install without apt-get update in the same RUN (DL3059)"
        [[ $rest == *"rm -rf /var/lib/apt/lists/*"* ]] || fail "$stage: apt lists not removed in the same RUN (DL3009)"
        # The packages: the words after `install` that are not options, up to the next &&.
        pkgs=$(sed -e 's/.*apt-get install//' -e 's/&&.*//' <<< "$rest" | tr ' ' '\n' | grep -v '^-' | sed '/^$/d' | sort -u)
        stage_packages[$stage]+="$pkgs"$'\n'
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

if [ $failures -ne 0 ]; then
  echo "check_dockerfile: $failures problem(s)" >&2
  exit 1
fi
echo "check_dockerfile: ok (${#stages[@]} stages: ${stages[*]}; cpu runtime packages: ${#listed[@]})"
