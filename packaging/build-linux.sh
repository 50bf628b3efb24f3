#!/usr/bin/env bash
# Build CASA Studio for Linux: a PyInstaller onedir bundle (dist/casa-studio/), a .tar.gz and a .deb,
# from a clean virtual environment, then smoke-test the frozen programs (packaging/smoke-test.sh).
#
#   packaging/build-linux.sh [--clean] [--torch cpu|cuda] [--torch-version V] [--torch-index URL]
#                            [--torch-wheel PATH] [--quick] [--skip-smoke]
#
#   --clean          recreate the build venv (build/venv-pkg[-cuda]) and PyInstaller's cache
#   --torch          cpu (default, smaller) or cuda (torch from the CUDA wheel index, or a local CUDA wheel)
#   --torch-version  the torch release to bundle (default $TORCH_VERSION or 2.13.0)
#   --torch-index    where torch comes from; default https://download.pytorch.org/whl/{cpu,cu128}.
#                    A torch-V+cpu wheel (cpu) or torch-V wheel without a local label (cuda) in
#                    $PIP_FIND_LINKS is used instead when --torch-index is not given.
#   --torch-wheel    a torch wheel file (its version wins over --torch-version) or a folder of wheels,
#                    used as pip --find-links instead of the index; the torch dependencies (nvidia-*
#                    for cuda) come from that folder or pip's usual indexes (PyPI)
#   --quick          xz -1 for the .deb (about 10x faster, about 15% larger) while iterating; releases use xz -6
#
# torch is pinned so that neither variant can install the other's build: torch==V+cpu for cpu;
# torch==V+cuNNN from a cuNNN index, else torch===V (exact, so never V+cpu) for cuda; and the script
# stops unless torch.version.cuda is unset (cpu) or set (cuda).
#
# Outputs: dist/casa-studio/ (cuda: dist/cuda/casa-studio/, so the CPU bundle stays),
# dist/casa-studio[-cuda]-VERSION-linux-x86_64.tar.gz, dist/casa-studio[-cuda]_VERSION_amd64.deb, and
# build/packaging/report.txt (sizes, times, smoke results; also copied to report-{cpu,cuda}.txt).
set -euo pipefail

TORCH=cpu
CLEAN=0
SMOKE=1
XZ_LEVEL=6
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_INDEX=${TORCH_INDEX:-}
TORCH_WHEEL=${TORCH_WHEEL:-}
PYTHON=${PYTHON:-python3}
while [ $# -gt 0 ]; do
    case $1 in
        --clean) CLEAN=1 ;;
        --torch) TORCH=$2; shift ;;
        --torch-version) TORCH_VERSION=$2; shift ;;
        --torch-index) TORCH_INDEX=$2; shift ;;
        --torch-wheel) TORCH_WHEEL=$2; shift ;;
        --quick) XZ_LEVEL=1 ;;
        --skip-smoke) SMOKE=0 ;;
        -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "build-linux.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' casa_core/__init__.py)
ARCH=amd64
# A local torch wheel: a file names its own version (torch-2.14.1-cp311-..., torch-2.13.0+cpu-cp311-...).
TORCH_LINKS=
if [ -f "$TORCH_WHEEL" ]; then
    wheel_version=$(basename "$TORCH_WHEEL" | cut -d- -f2)
    case $TORCH/$wheel_version in
        cpu/*+cpu) ;;
        cpu/* | cuda/*+cpu) echo "build-linux.sh: $TORCH_WHEEL is not a $TORCH torch wheel" >&2; exit 2 ;;
    esac
    TORCH_VERSION=${wheel_version%%+*}
    TORCH_LINKS=$(cd "$(dirname "$TORCH_WHEEL")" && pwd)
elif [ -d "$TORCH_WHEEL" ]; then
    TORCH_LINKS=$(cd "$TORCH_WHEEL" && pwd)
elif [ -n "$TORCH_WHEEL" ]; then
    echo "build-linux.sh: --torch-wheel $TORCH_WHEEL: no such file or folder" >&2; exit 2
fi
case $TORCH in
    cpu) PKG=casa-studio; VENV=build/venv-pkg; TORCH_SPEC="torch==$TORCH_VERSION+cpu"
         DEFAULT_INDEX=https://download.pytorch.org/whl/cpu; WHEEL_GLOB="torch-$TORCH_VERSION+cpu-*.whl"
         DISTDIR=dist ;;
    cuda) PKG=casa-studio-cuda; VENV=build/venv-pkg-cuda; TORCH_SPEC="torch===$TORCH_VERSION"
          DEFAULT_INDEX=https://download.pytorch.org/whl/cu128; WHEEL_GLOB="torch-$TORCH_VERSION-*.whl"
          DISTDIR=dist/cuda ;;
    *) echo "build-linux.sh: --torch must be cpu or cuda" >&2; exit 2 ;;
esac
# Where torch comes from: --torch-wheel, else a matching wheel in $PIP_FIND_LINKS, else the index.
if [ -n "$TORCH_LINKS" ]; then
    torch_src=(--find-links "$TORCH_LINKS")
elif [ -z "$TORCH_INDEX" ] && [ -n "${PIP_FIND_LINKS:-}" ] && compgen -G "$PIP_FIND_LINKS/$WHEEL_GLOB" >/dev/null; then
    TORCH_LINKS=$PIP_FIND_LINKS
    torch_src=()
else
    torch_src=(--index-url "${TORCH_INDEX:-$DEFAULT_INDEX}")
    # The CUDA indexes name their builds V+cuNNN: pin that (=== would never match them).
    label=$(basename "${TORCH_INDEX:-$DEFAULT_INDEX}")
    [ "$TORCH" = cuda ] && [[ $label =~ ^cu[0-9]+$ ]] && TORCH_SPEC="torch==$TORCH_VERSION+$label"
fi
BUNDLE=$DISTDIR/casa-studio
TARBALL=dist/$PKG-$VERSION-linux-x86_64.tar.gz
DEB=dist/${PKG}_${VERSION}_$ARCH.deb
WORK=build/packaging
REPORT=$WORK/report.txt
mkdir -p "$WORK" "$DISTDIR"
: >"$REPORT"
report() { echo "$1=$2" >>"$REPORT"; }
log() { echo "== build-linux: $*"; }
seconds_since() { echo $(($(date +%s) - $1)); }

# Reproducibility: one timestamp (the last commit) for every file, fixed hash seed, sorted archives.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH PYTHONHASHSEED=0
umask 022
T0=$(date +%s)
report version "$VERSION"
report torch_variant "$TORCH"
report source_date_epoch "$SOURCE_DATE_EPOCH"

# 1. The build venv: torch first (pinned, from the chosen index, so pip never swaps in a CUDA build),
#    then the project with its GUI extra and PyInstaller. Only runtime deps: no test extras.
stamp="$TORCH_SPEC $(sha256sum packaging/constraints.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ "$CLEAN" = 1 ] || [ "$(cat "$VENV/.casa-build" 2>/dev/null)" != "$stamp" ]; then
    log "creating $VENV ($TORCH_SPEC)"
    T=$(date +%s)
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    [ -n "$TORCH_LINKS" ] && log "using the torch wheel in $TORCH_LINKS"
    "$VENV/bin/pip" install --quiet "${torch_src[@]}" "$TORCH_SPEC"
    "$VENV/bin/pip" install --quiet -c packaging/constraints.txt ".[gui]" pyinstaller
    # Only the dependencies stay: the spec freezes casa_core / casa_gui from the working tree.
    "$VENV/bin/pip" uninstall --quiet -y casa-studio
    for unwanted in diffusers transformers peft; do
        if "$VENV/bin/pip" show --quiet "$unwanted" 2>/dev/null; then
            echo "build-linux.sh: $unwanted is in $VENV; it must not be bundled" >&2
            exit 1
        fi
    done
    echo "$stamp" >"$VENV/.casa-build"
    report venv_seconds "$(seconds_since "$T")"
else
    log "reusing $VENV (--clean to recreate it)"
    report venv_seconds 0
fi
report torch "$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
# The variant's guarantee: a CPU build never carries CUDA torch, a CUDA build never CPU torch.
torch_cuda=$("$VENV/bin/python" -c 'import torch; print(torch.version.cuda or "none")')
report torch_cuda "$torch_cuda"
if { [ "$TORCH" = cpu ] && [ "$torch_cuda" != none ]; } || { [ "$TORCH" = cuda ] && [ "$torch_cuda" = none ]; }; then
    echo "build-linux.sh: $VENV holds a torch built for CUDA $torch_cuda, not for --torch $TORCH" >&2
    exit 1
fi
if [ "$TORCH" = cuda ]; then  # the nvidia-* wheels it runs on (not all pinned by torch's metadata)
    report nvidia_wheels "$("$VENV/bin/pip" list --format=freeze 2>/dev/null | grep -iE '^(nvidia|cuda)' | paste -sd' ')"
fi

# 2. Freeze. The spec analyses the working tree's casa_core / casa_gui (pathex), not the venv's copy.
log "PyInstaller"
T=$(date +%s)
clean_args=()
[ "$CLEAN" = 1 ] && clean_args=(--clean)
workpath=$WORK/pyinstaller
[ "$TORCH" = cuda ] && workpath=$WORK/pyinstaller-cuda
nice -n 19 "$VENV/bin/pyinstaller" --noconfirm "${clean_args[@]}" --log-level WARN \
    --distpath "$DISTDIR" --workpath "$workpath" packaging/casa-studio.spec
report pyinstaller_seconds "$(seconds_since "$T")"
chmod -R u+rwX,go+rX,go-w "$BUNDLE"
find "$BUNDLE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
report bundle_bytes "$(du -sb "$BUNDLE" | cut -f1)"
report bundle_size "$(du -sh "$BUNDLE" | cut -f1)"
report bundle_dir "$BUNDLE"
if [ "$TORCH" = cuda ]; then  # torch and its CUDA libraries (nvidia-*): what the CUDA variant adds
    report bundle_torch_bytes "$(du -sb "$BUNDLE/_internal/torch" | cut -f1)"
    report bundle_nvidia_bytes "$(du -sb "$BUNDLE/_internal/nvidia" 2>/dev/null | cut -f1 || echo 0)"
fi

# Libraries the bundle expects from the system (Qt's xcb/EGL/fontconfig stack): the .deb's Depends.
# Warn about any this machine lacks; they are what a user's system must provide.
missing=$(find "$BUNDLE" -type f \( -name '*.so*' -o -name casa -o -name casa-gui \) -exec ldd {} + 2>/dev/null \
    | awk '/not found/ { print $1 }' | sort -u | while read -r lib; do
        [ -n "$(find "$BUNDLE" -name "$lib" -print -quit)" ] || printf '%s ' "$lib"
    done)
[ -n "$missing" ] && log "note: system libraries this machine lacks (the .deb depends on them): $missing"

# 3. tar.gz: sorted, numeric root owner, fixed mtimes, gzip without name/time.
log "tar.gz"
T=$(date +%s)
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    -C "$DISTDIR" -cf - casa-studio | nice -n 19 gzip -n >"$TARBALL"
report tarball "$TARBALL"
report tarball_bytes "$(stat -c %s "$TARBALL")"
report tarball_sha256 "$(sha256sum "$TARBALL" | cut -d' ' -f1)"

# 4. .deb: /opt/casa-studio, /usr/bin links, desktop entry, icons.
log ".deb"
stage=$WORK/deb/$PKG
rm -rf "$stage"
mkdir -p "$stage/DEBIAN" "$stage/opt" "$stage/usr/bin" "$stage/usr/share/applications" "$stage/usr/share/doc/$PKG"
cp -a "$BUNDLE" "$stage/opt/casa-studio"
ln -s /opt/casa-studio/casa "$stage/usr/bin/casa"
ln -s /opt/casa-studio/casa-gui "$stage/usr/bin/casa-gui"
install -m 644 resources/casa-studio.desktop "$stage/usr/share/applications/casa-studio.desktop"
for px in 16 32 48 64 128 256 512; do
    install -D -m 644 "resources/icons/casa-studio-$px.png" \
        "$stage/usr/share/icons/hicolor/${px}x$px/apps/casa-studio.png"
done
install -m 644 packaging/linux/copyright "$stage/usr/share/doc/$PKG/copyright"
installed_kb=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
# The newest glibc symbol version any bundled ELF file needs: the bundle runs on that glibc or later.
# (objdump fails on the executable scripts among them, e.g. torch 2.14's hipify_python.py: ignored.)
glibc=$(find "$BUNDLE" -type f \( -name '*.so*' -o -perm -u+x \) -print0 | { xargs -0 objdump -T 2>/dev/null || true; } \
    | grep -o 'GLIBC_[0-9][0-9.]*' | cut -d_ -f2 | sort -uV | tail -n 1)
report glibc_min "${glibc:=2.28}"
sed -e "s/@PACKAGE@/$PKG/" -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@INSTALLED_SIZE@/$installed_kb/" \
    -e "s/@GLIBC@/$glibc/" packaging/linux/control.in >"$stage/DEBIAN/control"
[ "$TORCH" = cuda ] && printf 'Conflicts: casa-studio\nReplaces: casa-studio\n' >>"$stage/DEBIAN/control"
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
nice -n 19 dpkg-deb --root-owner-group -Zxz "-z$XZ_LEVEL" --build "$stage" "$DEB" >/dev/null
report pack_seconds "$(seconds_since "$T")"
report deb "$DEB"
report deb_bytes "$(stat -c %s "$DEB")"
report deb_sha256 "$(sha256sum "$DEB" | cut -d' ' -f1)"
dpkg-deb -I "$DEB"

# The .deb as installed: unpack into a throwaway root and run the packaged `casa`.
check=$WORK/deb-root
rm -rf "$check"
dpkg-deb -x "$DEB" "$check"
[ "$(readlink "$check/usr/bin/casa")" = /opt/casa-studio/casa ] || { echo "bad /usr/bin/casa link" >&2; exit 1; }
deb_version=$("$check/opt/casa-studio/casa" --version)
report deb_casa_version "$deb_version"
rm -rf "$check"
report build_seconds "$(seconds_since "$T0")"

# 5. Smoke test of the frozen bundle.
if [ "$SMOKE" = 1 ]; then
    log "smoke test"
    smoke_rc=0
    packaging/smoke-test.sh "$BUNDLE" "$WORK/smoke" || smoke_rc=$?
    cat "$WORK/smoke/results.txt" >>"$REPORT"
else
    smoke_rc=0
fi

cp "$REPORT" "$WORK/report-$TORCH.txt"
log "done; $REPORT:"
cat "$REPORT"
exit "$smoke_rc"
