#!/bin/sh
# Exercise contrib/sysv/rtpproxy against a real daemon binary, inside a
# temporary directory: nothing under /etc or /run is read or written.
#
# Usage: tests/sysv_init.sh PATH_TO_RTPPROXY [FIRST_PORT LAST_PORT]
#
# FIRST_PORT and LAST_PORT, when given, are the daemons' media port range
# (-m, -M).  RTPP_TEST_USER in the environment names an account for the
# checks of the packaged layout; they need root, and are skipped with a
# note without RTPP_TEST_USER or root.
#
# The init script is found next to this file (../contrib/sysv/rtpproxy);
# INIT_SCRIPT in the environment overrides that.  The daemon is mostly
# started without -u, so as root it warns about running as root (unix
# control socket); that is expected.
#
# Every check runs twice: with start-stop-daemon (when installed), and
# with START_STOP_DAEMON= (the script's own check of /proc/PID/exe).
#
#   1. status before start is 3; start with a bad option fails and leaves
#      status 3; start succeeds; status is 0; the pid in the pidfile is
#      alive and the control socket exists; a second start succeeds without
#      starting another daemon; stop succeeds; the process is gone; status
#      is 3 and the pidfile is gone; stop when stopped succeeds.
#   2. drain of a daemon without calls succeeds, the daemon exits by
#      itself and removes its pidfile, and status says "not running" with
#      3; drain when stopped succeeds.
#   3. a pidfile naming a dead process gives status 1 and is removed by
#      stop.
#   4. a pidfile naming another program (a sleep this test starts): status
#      is 1, drain and stop succeed without signalling it, start starts the
#      daemon (the pidfile then names the daemon, status 0), and stop stops
#      the daemon and leaves the sleep alone.
#   5. a daemon whose binary was replaced while it ran, as a package
#      upgrade does: status is 0 and stop stops it.
#   6. the packaged layout (root and RTPP_TEST_USER): start creates the
#      pidfile's missing directory with mode 0755 and gives it to the user,
#      the daemon runs as that user; reload hands it over to a new process
#      that runs as that user too and rewrote the pidfile; after a drain
#      the daemon removes its pidfile and control socket from that
#      directory and status answers 3; the same after start and stop.
#   7. reload and upgrade (SIGUSR2, a hand-over): reload when stopped
#      answers 7; reload of a running daemon answers 0 once the pidfile
#      names a new live daemon, the old one is gone and the control socket
#      is still there; upgrade after the binary was replaced starts the new
#      file (its /proc/PID/exe is no longer "(deleted)"); with a binary
#      that exits at once, upgrade fails and the old daemon, still named
#      by the pidfile, goes on running.
#
# Exits 0 when every check passed, 1 with a message otherwise.  The
# daemons, the sleep and the temporary directory are cleaned up in every
# case.

set -u

me=sysv_init.sh
if [ $# -ne 1 ] && [ $# -ne 3 ]; then
	echo "usage: $me PATH_TO_RTPPROXY [FIRST_PORT LAST_PORT]" >&2
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
media=
if [ $# -eq 3 ]; then
	media="-m $2 -M $3"
fi
here=$(cd "$(dirname "$0")" && pwd) || exit 1
init=${INIT_SCRIPT:-$here/../contrib/sysv/rtpproxy}
if [ ! -r "$init" ]; then
	echo "$me: init script $init not found" >&2
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/rtpp-sysv.XXXXXX") || exit 1
# Every daemon this test saw start, and the sleep standing in for another
# program.
mode=setup
started_pids=
foreign=

# Kill process $1, if it still runs $2 (so that a pid reused by another
# program is left alone).
# shellcheck disable=SC2317  # called from the EXIT trap
kill_if_runs() {
	case $1 in
	'' | *[!0-9]*) return 0 ;;
	esac
	exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 0
	case ${exe% (deleted)} in
	"$2") ;;
	*) return 0 ;;
	esac
	kill -TERM "$1" 2>/dev/null
	i=0
	while kill -0 "$1" 2>/dev/null && [ "$i" -lt 50 ]; do
		sleep 0.1 2>/dev/null || sleep 1
		i=$((i + 1))
	done
	kill -KILL "$1" 2>/dev/null
}

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
	# Kill whatever this test started, by the pids it knows of only.
	for p in $started_pids; do
		kill_if_runs "$p" "$(readlink -f "$daemon")"
		kill_if_runs "$p" "$tmp/bin/rtpproxy"
	done
	if [ -n "$foreign" ]; then
		kill -KILL "$foreign" 2>/dev/null
		wait "$foreign" 2>/dev/null
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

fail() {
	echo "$me: FAIL [$mode]: $*" >&2
	if [ -s "$tmp/out" ]; then
		echo "$me: output of the last init script run:" >&2
		sed 's/^/    /' "$tmp/out" >&2
	fi
	exit 1
}

# Run the init script with the test's settings (run_daemon, run_pidfile,
# run_user and run_opts change them); its output goes to $tmp/out, its exit
# status is returned.  A daemon that never detaches would hang "start":
# bound every run when timeout(1) is available.
opts="-s unix:$tmp/ctl.sock -l 127.0.0.1 $media"
run_init() {
	if command -v timeout >/dev/null 2>&1; then
		bound="timeout 30"
	else
		bound=
	fi
	# shellcheck disable=SC2086
	DAEMON=${run_daemon:-$daemon} PIDFILE=${run_pidfile:-$tmp/pid} \
		RTPPROXY_DEFAULTS=$tmp/no-defaults \
		RTPPROXY_USER=${run_user-} RTPPROXY_OPTS=${run_opts-$opts} \
		$bound sh "$init" "$@" >"$tmp/out" 2>&1 </dev/null
	rc=$?
	if [ "$1" = start ]; then
		p=$(cat "${run_pidfile:-$tmp/pid}" 2>/dev/null)
		started_pids="$started_pids $p"
	fi
	return "$rc"
}

expect_status() {
	run_init status
	rc=$?
	[ "$rc" -eq "$1" ] || fail "status answered $rc, expected $1 ($2)"
}

# True while process $1 runs.  A zombie does not count: it has exited,
# and start-stop-daemon (like the init script) is done with it then,
# while reaping it is up to its parent (init), which may take a moment.
alive() {
	kill -0 "$1" 2>/dev/null || return 1
	st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
	case $st in
	Z* | X*) return 1 ;;
	esac
	return 0
}

# Wait up to 5 s for process $1 to end; fail naming $2 otherwise.
wait_gone() {
	i=0
	while alive "$1"; do
		[ "$i" -lt 50 ] || fail "pid $1 still running 5 s after $2"
		sleep 0.1 2>/dev/null || sleep 1
		i=$((i + 1))
	done
}

# Start the daemon through the script and print its pid.
start_daemon_ok() {
	run_init start
	rc=$?
	[ "$rc" -eq 124 ] && fail "start did not return within 30 s:" \
		"the daemon does not seem to detach into the background"
	[ "$rc" -eq 0 ] || fail "start answered $rc ($1)"
	p=$(cat "${run_pidfile:-$tmp/pid}" 2>/dev/null)
	case $p in
	'' | *[!0-9]*) fail "pidfile holds '$p', not a pid ($1)" ;;
	esac
	alive "$p" || fail "pid $p from the pidfile is not running ($1)"
	started=$p
}

# 1. Start, status, stop.
basic_checks() {
	expect_status 3 "before start"

	# A start that cannot succeed must say so.
	run_opts="$opts -Y"
	run_init start && fail "start with an unknown option answered 0"
	unset run_opts
	expect_status 3 "after a failed start"
	[ -e "$tmp/pid" ] && fail "a failed start left a pidfile"

	start_daemon_ok "first start"
	pid1=$started
	[ -S "$tmp/ctl.sock" ] || fail "no control socket at $tmp/ctl.sock"
	expect_status 0 "after start"

	# Starting again leaves the running daemon alone.
	run_init start
	rc=$?
	[ "$rc" -eq 0 ] || fail "second start answered $rc"
	[ "$(cat "$tmp/pid" 2>/dev/null)" = "$pid1" ] ||
		fail "second start replaced the daemon"

	run_init stop
	rc=$?
	[ "$rc" -eq 0 ] || fail "stop answered $rc"
	alive "$pid1" && fail "pid $pid1 still running after stop"
	[ -e "$tmp/pid" ] && fail "pidfile still there after stop"
	expect_status 3 "after stop"

	# Stopping a stopped daemon is not an error.
	run_init stop
	rc=$?
	[ "$rc" -eq 0 ] || fail "stop when stopped answered $rc"
}

# 2. Drain: a daemon without calls exits by itself at once, and removes
# its pidfile.
drain_checks() {
	start_daemon_ok "start before drain"
	pid1=$started
	run_init drain
	rc=$?
	[ "$rc" -eq 0 ] || fail "drain answered $rc"
	wait_gone "$pid1" "drain"
	expect_status 3 "after a drain"
	grep -q "not running" "$tmp/out" ||
		fail "status after a drain does not say \"not running\""
	[ -e "$tmp/pid" ] &&
		fail "pidfile still there after the drained daemon exited"
	run_init drain
	rc=$?
	[ "$rc" -eq 0 ] || fail "drain when stopped answered $rc"
}

# 3. A pidfile naming a dead process: status 1, and stop removes it.
stale_checks() {
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
}

# 4. A pidfile naming another program.
foreign_checks() {
	sleep 60 &
	foreign=$!
	alive "$foreign" || fail "cannot start the sleep standing in for" \
		"another program"
	echo "$foreign" >"$tmp/pid"
	expect_status 1 "with a pidfile naming another program"
	run_init drain
	rc=$?
	[ "$rc" -eq 0 ] || fail "drain with a pidfile naming another" \
		"program answered $rc"
	alive "$foreign" || fail "drain signalled the program a foreign" \
		"pidfile names"
	run_init stop
	rc=$?
	[ "$rc" -eq 0 ] || fail "stop with a pidfile naming another" \
		"program answered $rc"
	alive "$foreign" || fail "stop killed the program a foreign" \
		"pidfile names"

	echo "$foreign" >"$tmp/pid"
	start_daemon_ok "start over a pidfile naming another program"
	pid1=$started
	[ "$pid1" != "$foreign" ] ||
		fail "start left the pidfile naming another program"
	exe=$(readlink "/proc/$pid1/exe")
	[ "$exe" = "$(readlink -f "$daemon")" ] ||
		fail "the pidfile names $exe, not the daemon"
	expect_status 0 "after start over a pidfile naming another program"
	run_init stop
	rc=$?
	[ "$rc" -eq 0 ] || fail "stop answered $rc"
	wait_gone "$pid1" "stop"
	alive "$foreign" || fail "start or stop killed the other program"
	kill -KILL "$foreign" 2>/dev/null
	wait "$foreign" 2>/dev/null
	foreign=
}

# 5. The binary replaced under the running daemon: /proc/PID/exe then
# reads "PATH (deleted)".
upgrade_checks() {
	mkdir -p "$tmp/bin" || fail "cannot create $tmp/bin"
	cp "$daemon" "$tmp/bin/rtpproxy" || fail "cannot copy the daemon"
	run_daemon=$tmp/bin/rtpproxy
	start_daemon_ok "start of a copy of the daemon"
	pid1=$started
	if ! cp "$daemon" "$tmp/bin/rtpproxy.new" ||
		! mv -f "$tmp/bin/rtpproxy.new" "$tmp/bin/rtpproxy"; then
		fail "cannot replace the copy of the daemon"
	fi
	case $(readlink "/proc/$pid1/exe") in
	*" (deleted)") ;;
	*) fail "replacing the binary did not show in /proc/$pid1/exe" ;;
	esac
	expect_status 0 "after the binary was replaced"
	run_init stop
	rc=$?
	[ "$rc" -eq 0 ] || fail "stop after the binary was replaced" \
		"answered $rc"
	wait_gone "$pid1" "stop after the binary was replaced"
	expect_status 3 "after stopping a replaced binary"
	unset run_daemon
}

# Hand over through the script ($1: reload or upgrade) and check that a
# new daemon took over from pid $2; sets started to the new pid.
hand_over_ok() {
	run_init "$1"
	rc=$?
	[ "$rc" -eq 0 ] || fail "$1 answered $rc"
	p=$(cat "${run_pidfile:-$tmp/pid}" 2>/dev/null)
	started_pids="$started_pids $p"
	case $p in
	'' | *[!0-9]*) fail "pidfile holds '$p' after $1" ;;
	esac
	[ "$p" != "$2" ] || fail "$1 left pid $2 in the pidfile"
	alive "$p" || fail "pid $p from the pidfile is not running after $1"
	wait_gone "$2" "$1"
	started=$p
}

# 7. Reload and upgrade: a hand-over to a new process of the binary.
reload_checks() {
	run_init reload
	rc=$?
	[ "$rc" -eq 7 ] || fail "reload when stopped answered $rc, not 7"
	mkdir -p "$tmp/bin" || fail "cannot create $tmp/bin"
	cp "$daemon" "$tmp/bin/rtpproxy" || fail "cannot copy the daemon"
	run_daemon=$tmp/bin/rtpproxy
	start_daemon_ok "start before reload"
	hand_over_ok reload "$started"
	[ -S "$tmp/ctl.sock" ] || fail "no control socket after reload"
	expect_status 0 "after reload"

	if ! cp "$daemon" "$tmp/bin/rtpproxy.new" ||
		! mv -f "$tmp/bin/rtpproxy.new" "$tmp/bin/rtpproxy"; then
		fail "cannot replace the copy of the daemon"
	fi
	hand_over_ok upgrade "$started"
	case $(readlink "/proc/$started/exe") in
	*" (deleted)") fail "upgrade did not start the new binary" ;;
	esac

	pid1=$started
	if ! printf '#!/bin/sh\nexit 3\n' >"$tmp/bin/rtpproxy.new" ||
		! chmod 0755 "$tmp/bin/rtpproxy.new" ||
		! mv -f "$tmp/bin/rtpproxy.new" "$tmp/bin/rtpproxy"; then
		fail "cannot install the failing binary"
	fi
	RELOAD_TIMEOUT=8 run_init upgrade && fail "upgrade to a binary that" \
		"exits at once answered 0"
	alive "$pid1" || fail "the old daemon died when the upgrade failed"
	[ "$(cat "$tmp/pid" 2>/dev/null)" = "$pid1" ] ||
		fail "the pidfile no longer names the old daemon"
	[ -S "$tmp/ctl.sock" ] || fail "the failed upgrade removed the" \
		"control socket"
	if ! cp "$daemon" "$tmp/bin/rtpproxy.new" ||
		! mv -f "$tmp/bin/rtpproxy.new" "$tmp/bin/rtpproxy"; then
		fail "cannot put the daemon back"
	fi
	run_init stop
	rc=$?
	[ "$rc" -eq 0 ] || fail "stop after the hand-overs answered $rc"
	wait_gone "$pid1" "stop after the hand-overs"
	unset run_daemon
}

# 6. The packaged layout: pidfile and control socket in a runtime
# directory the script creates for the user the daemon runs as.
layout_checks() {
	user=$RTPP_TEST_USER
	uid=$(id -u "$user") || fail "no account $user"
	rundir=$tmp/run-$mode
	run_pidfile=$rundir/rtpproxy.pid
	run_user=$user
	run_opts="-s unix:$rundir/ctl.sock -l 127.0.0.1 $media"

	start_daemon_ok "start with RTPPROXY_USER=$user"
	pid1=$started
	[ -d "$rundir" ] || fail "start did not create $rundir"
	[ "$(stat -c %U "$rundir")" = "$user" ] ||
		fail "$rundir belongs to $(stat -c %U "$rundir"), not $user"
	[ "$(stat -c %a "$rundir")" = 755 ] ||
		fail "$rundir has mode $(stat -c %a "$rundir"), not 755"
	duid=$(sed -n 's/^Uid:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$pid1/status")
	[ "$duid" = "$uid" ] || fail "the daemon runs as uid $duid, not $uid"
	expect_status 0 "with RTPPROXY_USER=$user"

	# The new process needs no root: it runs as the user from the start.
	hand_over_ok reload "$pid1"
	pid1=$started
	duid=$(sed -n 's/^Uid:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$pid1/status")
	[ "$duid" = "$uid" ] || fail "the new daemon runs as uid $duid, not $uid"
	[ -S "$rundir/ctl.sock" ] || fail "no control socket after reload" \
		"(RTPPROXY_USER=$user)"

	run_init drain
	rc=$?
	[ "$rc" -eq 0 ] || fail "drain answered $rc (RTPPROXY_USER=$user)"
	wait_gone "$pid1" "drain (RTPPROXY_USER=$user)"
	expect_status 3 "after a drain (RTPPROXY_USER=$user)"
	grep -q "not running" "$tmp/out" ||
		fail "status after a drain does not say \"not running\"" \
			"(RTPPROXY_USER=$user)"
	[ -e "$run_pidfile" ] && fail "the daemon running as $user left" \
		"its pidfile after a drain"
	[ -e "$rundir/ctl.sock" ] && fail "the daemon running as $user" \
		"left its control socket after a drain"

	start_daemon_ok "second start with RTPPROXY_USER=$user"
	pid1=$started
	run_init stop
	rc=$?
	[ "$rc" -eq 0 ] || fail "stop answered $rc (RTPPROXY_USER=$user)"
	wait_gone "$pid1" "stop (RTPPROXY_USER=$user)"
	[ -e "$run_pidfile" ] && fail "pidfile left after stop" \
		"(RTPPROXY_USER=$user)"
	[ -e "$rundir/ctl.sock" ] && fail "control socket left after stop" \
		"(RTPPROXY_USER=$user)"
	expect_status 3 "after stop (RTPPROXY_USER=$user)"
	unset run_pidfile run_user run_opts
}

layout=yes
if [ -z "${RTPP_TEST_USER-}" ] || [ "$(id -u)" -ne 0 ]; then
	layout=no
	echo "$me: note: packaged layout checks skipped (they need root" \
		"and RTPP_TEST_USER)"
else
	# The user must reach the runtime directories inside $tmp.
	chmod 0755 "$tmp" || exit 1
fi

if command -v start-stop-daemon >/dev/null 2>&1; then
	modes="start-stop-daemon proc"
else
	echo "$me: note: start-stop-daemon is not installed; only the" \
		"script's own check of /proc/PID/exe is exercised"
	modes="proc"
fi
for mode in $modes; do
	if [ "$mode" = proc ]; then
		START_STOP_DAEMON=
		export START_STOP_DAEMON
	else
		unset START_STOP_DAEMON
	fi
	basic_checks
	drain_checks
	stale_checks
	foreign_checks
	upgrade_checks
	reload_checks
	[ "$layout" = yes ] && layout_checks
done

echo "$me: ok"
exit 0
