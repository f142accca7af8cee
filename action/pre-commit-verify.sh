#!/usr/bin/env bash
# The pre-commit hook (.pre-commit-hooks.yaml): `ca-export verify` on the changed artifacts.
#
# Usage: pre-commit-verify.sh MODEL [VERIFY OPTION...] FILE...
# pre-commit passes the hook's `args` (MODEL and its options) and then the changed files.
# A file inside a Core ML package (NAME.mlpackage/...) stands for its package, each
# package verified once; the other arguments are passed to verify as they are. With no
# artifact among them there is nothing to verify (exit 0). The exit code is verify's.
set -euo pipefail

# The artifact a path stands for ($1), or nothing when it is not an artifact's.
artifact_of() {
  case "$1" in
    *.mlpackage/*) printf '%s.mlpackage' "${1%%.mlpackage/*}" ;;
    *.onnx | *.ort | *.pte | *.mlmodel | *.mlpackage) printf '%s' "$1" ;;
  esac
}

if [ "$#" -eq 0 ] || [ -n "$(artifact_of "$1")" ]; then
  echo "error: give MODEL in the hook's args (args: [MODEL, OPTION...])" >&2
  exit 2
fi
model="$1"
shift
options=()
artifacts=()
seen=$'\n'
for arg in "$@"; do
  artifact=$(artifact_of "$arg")
  if [ -z "$artifact" ]; then
    options+=("$arg")
    continue
  fi
  case "$seen" in *$'\n'"$artifact"$'\n'*) continue ;; esac
  seen="$seen$artifact"$'\n'
  artifacts+=("$artifact")
done
if [ "${#artifacts[@]}" -eq 0 ]; then
  exit 0
fi
exec ca-export verify "$model" ${options[@]+"${options[@]}"} "${artifacts[@]}"
