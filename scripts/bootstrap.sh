#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: a .venv with the project and its dev/local extras, and Debian's
# redis-server. Safe to run any number of times; it reinstalls Python packages only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.zsad-install-stamp"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[bootstrap] creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

want=$(sha256sum pyproject.toml | cut -d' ' -f1)
have=$(cat "$STAMP" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
    echo "[bootstrap] installing Python packages (first run takes a few minutes: torch is large)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # torch first and alone: pip then takes the pinned pair from the local wheel store instead of resolving CUDA
    # builds through the other packages' ranges.
    "$VENV/bin/python" -m pip install --quiet torch==2.14.1 torchvision==0.29.1
    "$VENV/bin/python" -m pip install --quiet -e ".[dev,local]"
    echo "$want" > "$STAMP"
fi

# Debian packages: redis-server for the local stack and the integration tests; prometheus for promtool, which
# checks and unit-tests deploy/prometheus/zsad-alerts.yml.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# chromium and its driver: the operator view's browser test runs the page in a real headless browser.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# GigE Vision for `zsad gateway gige` and its tests: Aravis, its camera simulator and Debian's PyGObject.
command -v arv-fake-gv-camera-0.8 >/dev/null 2>&1 || missing+=(aravis-tools)
dpkg -s gir1.2-aravis-0.8 >/dev/null 2>&1 || missing+=(gir1.2-aravis-0.8)
[ -d /usr/lib/python3/dist-packages/gi ] || missing+=(python3-gi)
# GStreamer's RTSP server and the elements of its test stream (videotestsrc, jpegenc, rtpjpegpay): the stream
# gateway's RTSP test serves a real RTSP stream with them.
for package in gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "[bootstrap] installing Debian's ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's gi inside the venv: a .pth names a folder that holds only a link to it, so the rest of Debian's
# dist-packages stays out. It loads where the venv's Python has Debian's minor version (3.11 on bookworm);
# elsewhere `zsad gateway gige` says so and its tests are skipped.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$site/zsad-debian-gi"
ln -sfn /usr/lib/python3/dist-packages/gi "$site/zsad-debian-gi/gi"
echo "$site/zsad-debian-gi" > "$site/zsad-debian-gi.pth"
echo "[bootstrap] ready: $VENV ($("$VENV/bin/python" --version)), $(redis-server --version | cut -d' ' -f1-3)"
