#!/bin/sh
# The project's test command: installs the Debian packages the tests drive
# (Kamailio, sipp, tshark, sox, the GSM and G.729 libraries, rsyslog for
# the syslog test, Python's venv, Prometheus for the metrics test) when they
# are missing and Sippy B2BUA into
# a venv under the target directory (tests/sippy/install.sh), then runs
# every test of the workspace with every feature on.
set -eu
cd "$(dirname "$0")/.."

packages="kamailio sip-tester tshark tcpdump sox libgsm1-dev libbcg729-dev rsyslog python3-venv prometheus"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "tests need these Debian packages: apt-get install$missing (or run this script as root)" >&2
        exit 1
    fi
    echo "installing:$missing"
    apt-get update -qq
    # $missing is a list of names, split on purpose.
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
sh tests/sippy/install.sh

cargo test --workspace --all-features "$@"
