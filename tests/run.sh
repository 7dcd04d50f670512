#!/usr/bin/env bash
# The whole test suite, with everything it needs installed first (Debian 12, as root):
#   real Postfix, Exim and Haraka for the live-MTA tests, journald tools, the package itself.
# Usage: bash tests/run.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# The compiled build (setup.py, Cython from PyPI as a build requirement) needs a C compiler and
# Python's headers; without them the install is pure Python and tests/test_compiled.py would skip,
# so CI asks for them and makes that test fail instead (MAILLOG2OTEL_REQUIRE_COMPILED).
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    inc=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    if ! command -v cc >/dev/null || [ ! -f "$inc/Python.h" ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev python3-dev
    fi
fi
# CI tests the compiled build (the default where a compiler exists; tests/test_compiled.py compares
# it with the pure modules of the same install): both must export the same bytes
export MAILLOG2OTEL_BUILD="${MAILLOG2OTEL_BUILD:-compiled}"
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
python3 -m maillog2otel --version
export MAILLOG2OTEL_REQUIRE_COMPILED="${MAILLOG2OTEL_REQUIRE_COMPILED:-1}"
# optional: coverage-guided fuzzing in tests/test_fuzz.py (skipped when it does not install)
python3 -m pip install -q --disable-pip-version-check atheris 2>/dev/null \
    || echo "tests/run.sh: atheris did not install: its fuzz test will be skipped" >&2

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt_pkgs=(systemd systemd-journal-remote prometheus)  # prometheus: tests/test_prometheus.py scrapes with it
    missing=()
    for p in "${apt_pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    bash fixtures/postfix/install.sh
    bash fixtures/exim/install.sh
    if command -v npm >/dev/null; then bash fixtures/haraka/install.sh; fi
else
    echo "tests/run.sh: not root on Debian: the live-MTA and journald tests will be skipped" >&2
fi

exec python3 -m pytest "$@"
