#!/usr/bin/env bash
# Smoke-test a frozen bundle: `casa --version`, `casa convert --demo`, `casa-gui --self-test` offscreen.
# Usage: packaging/smoke-test.sh BUNDLE_DIR OUT_DIR
# Writes OUT_DIR/results.txt (key=value lines, read by tests/packaging) and exits non-zero on a failure.
# The GUI step is skipped, and says so, while casa_gui/app.py has no --self-test yet (set
# CASA_SMOKE_REQUIRE_GUI=1 to make that a failure, as CI does).
# A Windows bundle under Wine (packaging/build-windows-wine.sh): CASA_SMOKE_RUN=wine CASA_SMOKE_EXE=.exe.
# The programs' output goes through a pipe, never straight to a file (a Windows Python under Wine
# dies with "init_sys_streams: Invalid handle" when its stdout is a regular file).
set -uo pipefail

bundle=$(cd "$1" && pwd)
out=$(mkdir -p "$2" && cd "$2" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
results="$out/results.txt"
: >"$results"
failed=0

run=${CASA_SMOKE_RUN:-}
exe=${CASA_SMOKE_EXE:-}
casa() { $run "$bundle/casa$exe" "$@"; }

record() { echo "$1=$2" >>"$results"; echo "  $1=$2"; }
step() { echo "== smoke: $*"; }

step "casa --version"
version=$(casa --version 2>&1 | tr -d '\r')
rc=${PIPESTATUS[0]}
record casa_version_rc "$rc"
record casa_version "$version"
[ "$rc" = 0 ] || failed=1

step "casa convert --demo"
rm -f "$out/demo-output.safetensors" "$out/demo-report.json"
start=$(date +%s.%N)
(cd "$out" && casa convert --demo -o "$out/demo-output.safetensors" --report "$out/demo-report.json") 2>&1 \
    | cat >"$out/convert.log"
rc=${PIPESTATUS[0]}
record convert_rc "$rc"
record convert_seconds "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
record convert_output_bytes "$(stat -c %s "$out/demo-output.safetensors" 2>/dev/null || echo 0)"
tail -n 3 "$out/convert.log"
[ "$rc" = 0 ] && [ -s "$out/demo-output.safetensors" ] || failed=1
# the frozen engine must find numpy's OpenBLAS for its split eigensolver (else 35% slower)
eig=$(grep -o '"eigensolver": "[^"]*"' "$out/demo-report.json" 2>/dev/null | head -n 1 | cut -d'"' -f4)
record eigensolver "$eig"
case $eig in LAPACKE*) ;; *) echo "smoke: the bundle falls back to numpy.linalg.eigh" >&2; failed=1 ;; esac

step "casa-gui --self-test (offscreen)"
rm -f "$out/shot.png"
if [ -f "$root/casa_gui/app.py" ] && grep -q -- "self.test" "$root/casa_gui/app.py"; then
    QT_QPA_PLATFORM=offscreen timeout 300 $run "$bundle/casa-gui$exe" --self-test "$out/shot.png" 2>&1 \
        | timeout 320 cat >"$out/gui.log"  # a Windows program hung under Wine may hold the pipe open
    rc=${PIPESTATUS[0]}
    record gui_rc "$rc"
    record gui_png_bytes "$(stat -c %s "$out/shot.png" 2>/dev/null || echo 0)"
    tail -n 3 "$out/gui.log"
    [ "$rc" = 0 ] && [ -s "$out/shot.png" ] || failed=1
else
    echo "  SKIPPED: casa_gui/app.py with --self-test is not in this tree yet (the GUI has not landed)"
    record gui_rc skipped
    [ "${CASA_SMOKE_REQUIRE_GUI:-0}" = 1 ] && failed=1
fi

record smoke_ok "$([ $failed = 0 ] && echo yes || echo no)"
exit $failed
