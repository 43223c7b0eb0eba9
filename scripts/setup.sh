#!/usr/bin/env bash
# Prepare a development checkout of TornadIO.  Safe to run any number of times:
# every step is skipped when its result is already there.
#
#   scripts/setup.sh              .venv with TornadIO (editable) + test deps,
#                                 .venv-redis-oldest (the oldest redis-py allowed),
#                                 and the socket.io 0.6 client from npm
#   scripts/setup.sh --browser    ... plus Chromium (Debian package) if missing
#   scripts/setup.sh --services   ... plus redis-server and nginx-light if missing
#
# Environment: PYTHON (default python3) picks the interpreter for the venv.
set -Eeuo pipefail

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
}

want_browser=0
want_services=0
for arg in "$@"; do
    case "$arg" in
        --browser) want_browser=1 ;;
        --services) want_services=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "setup.sh: unknown option: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }
trap 'rc=$?; [ "$BASH_SUBSHELL" -ne 0 ] || printf "setup: FAILED (exit %s) at line %s: %s\n" "$rc" "$LINENO" "$BASH_COMMAND" >&2' ERR

# -- Python virtualenv ------------------------------------------------------
python="${PYTHON:-python3}"
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
    command -v "$python" >/dev/null || die "$python not found (install Python >= 3.9)"
    say "creating $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
    || die ".venv has Python < 3.9; remove .venv and rerun with PYTHON=python3.9+"

# Reinstall only when the packaging metadata changed since the last install.
stamp="$venv/.tornadio-installed"
meta_files=()
for f in setup.py setup.cfg pyproject.toml; do
    if [ -f "$f" ]; then meta_files+=("$f"); fi
done
[ "${#meta_files[@]}" -gt 0 ] || die "no setup.py/pyproject.toml in $root"
meta_hash="$(cat "${meta_files[@]}" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$meta_hash" ]; then
    say "installing tornadio (editable) with test extras into .venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
    printf '%s\n' "$meta_hash" > "$stamp"
fi

# -- the oldest redis-py allowed, for tests/scaling/test_redis_py_matrix.py ---
# A second small venv: the same tornado and pytest as .venv, redis-py pinned to
# the floor of pyproject.toml's "redis" extra (.venv has the newest).
redis_floor="$(sed -n 's/.*"redis>=\([0-9][0-9.]*\)".*/\1/p' pyproject.toml | head -n 1)"
[ -n "$redis_floor" ] || die 'pyproject.toml has no "redis>=X.Y.Z" extra'
oldest="$root/.venv-redis-oldest"
oldest_want="$("$venv/bin/python" -c 'import pytest, tornado; print("tornado==%s pytest==%s" % (tornado.version, pytest.__version__))') redis==$redis_floor"
oldest_stamp="$oldest/.tornadio-installed"
if [ ! -f "$oldest_stamp" ] || [ "$(cat "$oldest_stamp")" != "$oldest_want" ]; then
    say "creating $oldest ($oldest_want)"
    rm -rf "$oldest"
    "$venv/bin/python" -m venv "$oldest"
    # shellcheck disable=SC2086  # the list is word-split on purpose
    "$oldest/bin/python" -m pip install --quiet --disable-pip-version-check $oldest_want
    printf '%s\n' "$oldest_want" > "$oldest_stamp"
fi

# -- socket.io 0.6 browser client (npm) -------------------------------------
client_js="$root/node_modules/socket.io/support/socket.io-client/socket.io.js"
if [ ! -f "$client_js" ]; then
    command -v npm >/dev/null || die "npm not found (install Node.js >= 18 with npm)"
    say "npm install (socket.io 0.6.18, for the browser client)"
    npm install --no-audit --no-fund --loglevel=error
    [ -f "$client_js" ] || die "npm install finished but $client_js is missing"
fi

# -- system packages (Debian/Ubuntu) ----------------------------------------
apt_updated=0
apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "need root or sudo to apt-get install $*"
        sudo="sudo"
    fi
    command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
    if [ "$apt_updated" -eq 0 ]; then
        say "apt-get update"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    say "apt-get install $*"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

have() {  # have NAME: on PATH or in the sbin directories (not always on PATH)
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]
}

if [ "$want_browser" -eq 1 ] && [ ! -x /usr/bin/chromium ]; then
    apt_install chromium
    [ -x /usr/bin/chromium ] || die "chromium installed but /usr/bin/chromium is missing"
fi

if [ "$want_services" -eq 1 ]; then
    missing=()
    have redis-server || missing+=(redis-server)
    have nginx || missing+=(nginx-light)
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
fi

say "ready"
