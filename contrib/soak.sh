#!/bin/sh
# Soak test (not part of the default test run): a release build relays
# SESSIONS calls (default 500) on loopback for MINUTES (default 10) with
# churn, and contrib/soak.py reports loss, latency, the daemon's RSS and CPU
# every 10 s, then totals. Usage: contrib/soak.sh [MINUTES] [SESSIONS]
#
# The daemon listens for control on udp:127.0.0.1:22999 and relays on
# ports 28000-31999; it is stopped (by its pid) when the script ends.
set -eu
cd "$(dirname "$0")/.."
minutes=${1:-10}
sessions=${2:-500}
case "$minutes$sessions" in
*[!0-9]*) echo "usage: contrib/soak.sh [MINUTES] [SESSIONS]" >&2; exit 2 ;;
esac
cargo build --release --quiet --bin rtpproxy
dir=$(mktemp -d "${TMPDIR:-/tmp}/rtpp-soak.XXXXXX")
# -F: allowed to run as root with UDP control (a test machine); -L: four
# descriptors per call and room for churn.
./target/release/rtpproxy -f -F -s udp:127.0.0.1:22999 -l 127.0.0.1 \
    -m 28000 -M 31999 -L 16384 -d WARN -p "$dir/rtpproxy.pid" 2>"$dir/rtpproxy.log" &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ -s "$dir/rtpproxy.log" ]; then
        echo "soak: the daemon logged:" >&2
        tail -n 20 "$dir/rtpproxy.log" >&2
    fi
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM
# The daemon answers V once it is up (bounded wait).
i=0
until python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)
s.sendto(b"w V", ("127.0.0.1", 22999))
sys.exit(0 if s.recv(100) == b"w 20040107\n" else 1)' 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -lt 50 ] || { echo "soak: the daemon did not start" >&2; exit 1; }
    sleep 0.1
done
python3 contrib/soak.py --ctl 127.0.0.1:22999 --pid "$pid" \
    --sessions "$sessions" --seconds $((minutes * 60))
