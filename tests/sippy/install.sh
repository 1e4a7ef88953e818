#!/bin/sh
# Installs Sippy B2BUA (PyPI `sippy`, pinned below) into a Python virtual
# environment for tests/interop_sippy.rs: ${CARGO_TARGET_DIR:-target}/sippy-venv
# (relative to the repository), whose bin/b2bua the tests run. Does nothing
# when that venv already holds this version. Needs Debian's python3-venv
# (tests/run.sh installs it) and access to PyPI.
set -eu
cd "$(dirname "$0")/../.."

version=2.5.0
venv="${CARGO_TARGET_DIR:-target}/sippy-venv"

if [ -x "$venv/bin/b2bua" ] && [ "$(cat "$venv/sippy-version" 2>/dev/null)" = "$version" ]; then
    exit 0
fi
echo "installing sippy $version into $venv"
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
# Debian's interpreter, the one python3-venv belongs to, whatever python3
# comes first in PATH.
/usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "sippy==$version"
"$venv/bin/python3" -c 'import sippy.b2bua'
echo "$version" >"$venv/sippy-version"
