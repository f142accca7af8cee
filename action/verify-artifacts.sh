#!/usr/bin/env bash
# Verify exported models against their PyTorch model: the steps of the ca-export GitHub
# Action (action.yml), run the same way on a laptop.
#
# Inputs, as environment variables (action.yml sets them from the action's inputs):
#   CA_EXPORT_MODEL        MODEL for `ca-export verify` (sample name, file.py:factory, ...); required
#   CA_EXPORT_ARTIFACTS    artifacts, one path or glob per line; required
#   CA_EXPORT_WEIGHTS      --weights CKPT
#   CA_EXPORT_INPUT_SHAPE  --input-shape N,C,H,W
#   CA_EXPORT_SHAPES       --shapes, e.g. 1x3x224x224,2x3x256x320
#   CA_EXPORT_RTOL         --rtol
#   CA_EXPORT_ATOL         --atol
#   CA_EXPORT_ARGS         more `ca-export verify` options, split on spaces (e.g. --trust-pickle)
#   CA_EXPORT_OUTPUT_DIR   where the reports go (default: ca-export-verify)
#   CA_EXPORT_INSTALL      1: install torch and ca-export first; anything else: use the
#                          ca-export on PATH
#   CA_EXPORT_SOURCE       what pip installs ca-export from (default: this repository)
#   CA_EXPORT_EXTRAS       ca-export extras, comma-separated (e.g. executorch)
#   CA_EXPORT_PACKAGES     more pip requirements the model needs, split on spaces
#   CA_EXPORT_TORCH        torch version, installed first (default: 2.13.0)
#   CA_EXPORT_TORCH_INDEX  the index torch comes from (default: PyTorch's CPU wheels)
#   GITHUB_STEP_SUMMARY    if set, every artifact's Markdown table is appended to it
#   GITHUB_OUTPUT          if set, gets exit-code=CODE
#
# Each artifact gets its own `ca-export verify` run, so that one missing or unreadable
# artifact does not hide the verdict on the others. Per artifact NAME (its path with "/"
# made "_") the output folder holds NAME.xml (JUnit), NAME.md (Markdown) and NAME.log
# (what verify printed); for an artifact verify wrote none for, the script writes NAME.xml
# and NAME.md naming the error. Exit code: the worst of the runs (0 all passed, 1 a check
# failed, 2 bad input, 3 unexpected); an interrupted run stops the script with its code.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
model="${CA_EXPORT_MODEL:-}"
artifacts_input="${CA_EXPORT_ARTIFACTS:-}"
if [ -z "$model" ]; then
  echo "error: CA_EXPORT_MODEL (the action's model input) is required" >&2
  exit 2
fi
out="${CA_EXPORT_OUTPUT_DIR:-ca-export-verify}"

if [ "${CA_EXPORT_INSTALL:-0}" = 1 ]; then
  source_dir="${CA_EXPORT_SOURCE:-$(dirname "$here")}"
  torch="torch==${CA_EXPORT_TORCH:-2.13.0}"
  package="$source_dir"
  if [ -n "${CA_EXPORT_EXTRAS:-}" ]; then
    package="${source_dir}[${CA_EXPORT_EXTRAS// /}]"
  fi
  read -r -a packages <<<"${CA_EXPORT_PACKAGES:-}"
  # torch first, from the CPU index: a requirement admitting torch from PyPI would pull
  # the CUDA build (several GB). Naming it again keeps the second install from moving it.
  python -m pip install "$torch" --index-url "${CA_EXPORT_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
  python -m pip install "$torch" "$package" ${packages[@]+"${packages[@]}"}
fi
if ! command -v ca-export >/dev/null; then
  echo "error: ca-export is not on PATH (CA_EXPORT_INSTALL=1 installs it)" >&2
  exit 2
fi
ca-export --version

options=()
[ -n "${CA_EXPORT_WEIGHTS:-}" ] && options+=(--weights "$CA_EXPORT_WEIGHTS")
[ -n "${CA_EXPORT_INPUT_SHAPE:-}" ] && options+=(--input-shape "$CA_EXPORT_INPUT_SHAPE")
[ -n "${CA_EXPORT_SHAPES:-}" ] && options+=(--shapes "$CA_EXPORT_SHAPES")
[ -n "${CA_EXPORT_RTOL:-}" ] && options+=(--rtol "$CA_EXPORT_RTOL")
[ -n "${CA_EXPORT_ATOL:-}" ] && options+=(--atol "$CA_EXPORT_ATOL")
read -r -a extra <<<"${CA_EXPORT_ARGS:-}"
options+=(${extra[@]+"${extra[@]}"})

mkdir -p "$out"
worst=0
passed=0
failed=0
errors=0
seen=$'\n'

# The base of an artifact's report paths ($1): its path with "/" and glob characters made "_".
report_base() {
  local name="${1#./}"
  name="${name%/}"
  name="${name#/}"
  name="${name//[\/\*\?\[]/_}"
  printf '%s/%s' "$out" "$name"
}

# $1 with &, <, > and " written as XML entities.
xml_escape() {
  printf '%s' "$1" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g'
}

# Records an artifact that verify wrote no report for (bad input, an error, or a check
# that failed before any comparison): its JUnit and Markdown files and the step summary
# say why ($1 artifact, $2 report base path, $3 exit code, $4 reason).
record_error() {
  local text verdict="error (exit $3)" element=error name message
  if [ "$3" -eq 1 ]; then
    verdict="FAILED"
    element=failure
  fi
  text=$(printf '### ca-export verify: %s — %s\n\n%s: %s\n' "$model" "$verdict" "$1" "$4")
  printf '%s\n' "$text" >"$2.md"
  if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    printf '%s\n' "$text" >>"$GITHUB_STEP_SUMMARY"
  fi
  name=$(xml_escape "$1")
  message=$(xml_escape "$4")
  {
    printf '<?xml version="1.0" encoding="utf-8"?>\n<testsuites name="ca-export verify">'
    printf '<testsuite name="%s" tests="1" failures="%s" errors="%s" skipped="0">' \
      "$name" "$(($3 == 1))" "$(($3 != 1))"
    printf '<testcase classname="%s" name="verify"><%s message="%s" type="exit %s" />' \
      "$name" "$element" "$message" "$3"
    printf '</testcase></testsuite></testsuites>\n'
  } >"$2.xml"
}

# Verifies one artifact ($1) into the output folder; sets `code`.
verify_one() {
  local artifact="$1" base
  base=$(report_base "$artifact")
  rm -f "$base.xml" "$base.md" "$base.log"
  # HTML report: empty until `ca-export verify` has --html; then html=(--html "$base.html").
  local html=()
  set +e
  ca-export verify "$model" "$artifact" ${options[@]+"${options[@]}"} \
    --junit "$base.xml" --markdown "$base.md" ${html[@]+"${html[@]}"} 2>&1 | tee "$base.log"
  code=$?
  set -e
  if [ "$code" -ne 0 ] && [ ! -f "$base.xml" ]; then
    record_error "$artifact" "$base" "$code" "$(tail -n 1 "$base.log")"
  fi
}

# Counts one artifact's exit code ($1) into the totals; an interrupted run ends the script.
tally() {
  case "$1" in
    0) passed=$((passed + 1)) ;;
    1) failed=$((failed + 1)) ;;
    2 | 3) errors=$((errors + 1)) ;;
    *) exit "$1" ;;
  esac
  if [ "$1" -gt "$worst" ]; then
    worst=$1
  fi
}

count=0
while IFS= read -r line; do
  line="${line#"${line%%[![:space:]]*}"}"
  line="${line%"${line##*[![:space:]]}"}"
  [ -z "$line" ] && continue
  case "$line" in
    *[\*\?\[]*)
      matches=()
      while IFS= read -r match; do
        [ -n "$match" ] && matches+=("$match")
      done < <(compgen -G "$line" | LC_ALL=C sort)
      ;;
    *) matches=("$line") ;;
  esac
  if [ "${#matches[@]}" -eq 0 ]; then
    count=$((count + 1))
    echo "error: no file matches $line" >&2
    record_error "$line" "$(report_base "$line")" 2 "no file matches this pattern"
    tally 2
    continue
  fi
  for artifact in "${matches[@]}"; do
    case "$seen" in *$'\n'"$artifact"$'\n'*) continue ;; esac
    seen="$seen$artifact"$'\n'
    count=$((count + 1))
    verify_one "$artifact"
    tally "$code"
  done
done <<<"$artifacts_input"

if [ "$count" -eq 0 ]; then
  echo "error: CA_EXPORT_ARTIFACTS names no artifact" >&2
  worst=2
fi
echo "ca-export verify: $count artifacts, $passed passed, $failed failed, $errors not judged (bad input or error); reports in $out"
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  echo "exit-code=$worst" >>"$GITHUB_OUTPUT"
fi
exit "$worst"
