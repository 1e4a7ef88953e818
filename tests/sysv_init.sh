#!/bin/sh
# Exercise contrib/sysv/rtpproxy against a real daemon binary, inside a
# temporary directory: nothing under /etc or /var/run is read or written.
#
# Usage: tests/sysv_init.sh PATH_TO_RTPPROXY
#
# The init script is found next to this file (../contrib/sysv/rtpproxy);
# INIT_SCRIPT in the environment overrides that.  The daemon is started
# without -u, so as root it warns about running as root (unix control
# socket); that is expected.
#
# Checks, in order:
#   status before start is 3; start with a bad option fails and leaves
#   status 3; start succeeds; status is 0; the pid in the pidfile is alive
#   and the control socket exists; a second start succeeds without starting
#   another daemon; stop succeeds; the process is gone; status is 3 and the
#   pidfile is gone; stop when stopped succeeds; drain of a daemon without
#   calls succeeds and the daemon exits by itself, leaving status 3; drain
#   when stopped succeeds; a pidfile naming a dead process gives status 1
#   and is removed by stop.
#
# Exits 0 when every check passed, 1 with a message otherwise.  The daemon
# and the temporary directory are cleaned up in every case.

set -u

me=sysv_init.sh
if [ $# -ne 1 ]; then
	echo "usage: $me PATH_TO_RTPPROXY" >&2
	exit 2
fi
case $1 in
/*) daemon=$1 ;;
*) daemon=$PWD/$1 ;;
esac
if [ ! -x "$daemon" ]; then
	echo "$me: $daemon is not an executable" >&2
	exit 1
fi
here=$(cd "$(dirname "$0")" && pwd) || exit 1
init=${INIT_SCRIPT:-$here/../contrib/sysv/rtpproxy}
if [ ! -r "$init" ]; then
	echo "$me: init script $init not found" >&2
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/rtpp-sysv.XXXXXX") || exit 1
started_pid=

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
	# Kill whatever this test started, by the pids it knows of only.
	for p in "$started_pid" "$(cat "$tmp/pid" 2>/dev/null)"; do
		case $p in
		'' | *[!0-9]*) continue ;;
		esac
		if kill -0 "$p" 2>/dev/null; then
			kill -TERM "$p" 2>/dev/null
			i=0
			while kill -0 "$p" 2>/dev/null && [ "$i" -lt 50 ]; do
				sleep 0.1 2>/dev/null || sleep 1
				i=$((i + 1))
			done
			kill -KILL "$p" 2>/dev/null
		fi
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

fail() {
	echo "$me: FAIL: $*" >&2
	if [ -s "$tmp/out" ]; then
		echo "$me: output of the last init script run:" >&2
		sed 's/^/    /' "$tmp/out" >&2
	fi
	exit 1
}

# Run the init script with the test's settings; its output goes to
# $tmp/out, its exit status is returned.  A daemon that never detaches
# would hang "start": bound every run when timeout(1) is available.
opts="-s unix:$tmp/ctl.sock -l 127.0.0.1"
run_init() {
	if command -v timeout >/dev/null 2>&1; then
		bound="timeout 30"
	else
		bound=
	fi
	# shellcheck disable=SC2086
	DAEMON=$daemon PIDFILE=$tmp/pid RTPPROXY_DEFAULTS=$tmp/no-defaults \
		RTPPROXY_USER='' RTPPROXY_OPTS=${run_opts-$opts} \
		$bound sh "$init" "$@" >"$tmp/out" 2>&1 </dev/null
}

expect_status() {
	run_init status
	rc=$?
	[ "$rc" -eq "$1" ] || fail "status answered $rc, expected $1 ($2)"
}

alive() {
	kill -0 "$1" 2>/dev/null
}

# Not started yet.
expect_status 3 "before start"

# A start that cannot succeed must say so.
run_opts="$opts -Y"
run_init start && fail "start with an unknown option answered 0"
unset run_opts
expect_status 3 "after a failed start"
[ -e "$tmp/pid" ] && fail "a failed start left a pidfile"

# Start.
run_init start
rc=$?
[ "$rc" -eq 124 ] && fail "start did not return within 30 s:" \
	"the daemon does not seem to detach into the background"
[ "$rc" -eq 0 ] || fail "start answered $rc"
[ -s "$tmp/pid" ] || fail "no pidfile after start"
started_pid=$(cat "$tmp/pid")
case $started_pid in
'' | *[!0-9]*) fail "pidfile holds '$started_pid', not a pid" ;;
esac
alive "$started_pid" || fail "pid $started_pid from the pidfile is not running"
[ -S "$tmp/ctl.sock" ] || fail "no control socket at $tmp/ctl.sock"
expect_status 0 "after start"

# Starting again leaves the running daemon alone.
run_init start
rc=$?
[ "$rc" -eq 0 ] || fail "second start answered $rc"
[ "$(cat "$tmp/pid" 2>/dev/null)" = "$started_pid" ] ||
	fail "second start replaced the daemon"

# Stop.
run_init stop
rc=$?
[ "$rc" -eq 0 ] || fail "stop answered $rc"
alive "$started_pid" && fail "pid $started_pid still running after stop"
[ -e "$tmp/pid" ] && fail "pidfile still there after stop"
expect_status 3 "after stop"

# Stopping a stopped daemon is not an error.
run_init stop
rc=$?
[ "$rc" -eq 0 ] || fail "stop when stopped answered $rc"

# Drain: a daemon without calls exits by itself at once.
run_init start
rc=$?
[ "$rc" -eq 0 ] || fail "start before drain answered $rc"
started_pid=$(cat "$tmp/pid")
run_init drain
rc=$?
[ "$rc" -eq 0 ] || fail "drain answered $rc"
i=0
while alive "$started_pid"; do
	[ "$i" -lt 50 ] || fail "pid $started_pid still running 5 s after drain"
	sleep 0.1 2>/dev/null || sleep 1
	i=$((i + 1))
done
expect_status 3 "after a drain"
[ -e "$tmp/pid" ] && fail "pidfile still there after the drained daemon exited"
run_init drain
rc=$?
[ "$rc" -eq 0 ] || fail "drain when stopped answered $rc"

# A pidfile naming a dead process: status 1, and stop removes it.
sh -c 'exit 0' &
dead=$!
wait "$dead"
alive "$dead" && fail "cannot find a dead pid for the stale pidfile check"
echo "$dead" >"$tmp/pid"
expect_status 1 "with a stale pidfile"
run_init stop
rc=$?
[ "$rc" -eq 0 ] || fail "stop with a stale pidfile answered $rc"
[ -e "$tmp/pid" ] && fail "stop left the stale pidfile"
expect_status 3 "after removing the stale pidfile"

echo "$me: ok"
exit 0
