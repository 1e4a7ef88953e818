#!/bin/sh
# What an operator's syslog gets from the packaged settings: the SysV init
# script, reading contrib/default/rtpproxy (RTPPROXY_LOG_LEVEL), starts the
# daemon, which logs to a real rsyslogd through /dev/log.  Driven by
# tests/daemon_life.rs (packaged_log_level_reaches_syslog), which makes a
# call over the control socket in the middle and checks the files this
# script leaves in DIR.
#
# Usage: unshare --mount --propagation private \
#            sh tests/syslog_level.sh PATH_TO_RTPPROXY DIR FIRST_PORT LAST_PORT
#
# It must run as root in a mount namespace of its own, as it mounts a
# tmpfs over /dev there (it refuses to run in its parent's namespace).  In
# that /dev, only null, zero, random and urandom are bound from the real
# one, so /dev/log is whatever this script puts there.
#
#   1. No /dev/log: the daemon, started in the background directly (-p
#      and a unix control socket in DIR), leaves its standard error in
#      DIR/nolog.err and its exit status in DIR/nolog.rc; it is then
#      stopped by its pid.
#   2. rsyslogd (foreground, its own configuration and pidfile in DIR, no
#      kernel log module) creates /dev/log and writes every message to
#      DIR/syslog.out.  The init script starts the daemon with
#      RTPPROXY_DEFAULTS=contrib/default/rtpproxy and DAEMON, PIDFILE
#      (DIR/rtpproxy.pid), RTPPROXY_USER (empty) and RTPPROXY_OPTS (control
#      socket DIR/ctl.sock, -l 127.0.0.1, the ports given, -F) from the
#      environment, so that the level is the defaults file's.  DIR/ready
#      then appears; once the caller creates DIR/go (within 60 s) the init
#      script stops the daemon.
#   3. The same start and stop with "-d WARN" added to RTPPROXY_OPTS,
#      which must win over RTPPROXY_LOG_LEVEL (the daemon takes the last
#      -d): the caller checks that one start line only reached syslog.
#   4. rsyslogd is stopped (SIGTERM: it writes out what it holds) and the
#      script exits 0.
#
# A failed step exits 1 with the reason on standard error.  On any exit
# (SIGTERM included) every process the script started is ended by its pid;
# the namespace goes away with them.  Nothing in DIR is removed: the
# caller owns it.

set -u

me=syslog_level.sh
if [ $# -ne 4 ]; then
	echo "usage: $me PATH_TO_RTPPROXY DIR FIRST_PORT LAST_PORT" >&2
	exit 2
fi
daemon=$1
dir=$2
first=$3
last=$4
here=$(cd "$(dirname "$0")" && pwd) || exit 1
init=$here/../contrib/sysv/rtpproxy
defaults=$here/../contrib/default/rtpproxy

fail() {
	echo "$me: FAIL: $*" >&2
	exit 1
}

[ "$(id -u)" -eq 0 ] || fail "needs root"
[ -x "$daemon" ] || fail "$daemon is not an executable"
[ -d "$dir" ] || fail "$dir is not a directory"
if [ ! -r "$init" ] || [ ! -r "$defaults" ]; then
	fail "$init or $defaults missing"
fi
command -v rsyslogd >/dev/null 2>&1 ||
	fail "rsyslogd is not installed (apt-get install rsyslog)"
# Never mount over the caller's /dev: unshare execs this script, so its
# parent is the caller, whose mount namespace must differ from ours.
own_ns=$(readlink /proc/self/ns/mnt) || fail "cannot read /proc/self/ns/mnt"
parent_ns=$(readlink "/proc/$PPID/ns/mnt") ||
	fail "cannot read /proc/$PPID/ns/mnt"
[ "$own_ns" != "$parent_ns" ] ||
	fail "not in a mount namespace of its own; run it under" \
		"unshare --mount --propagation private"

bg_pid=
rsyslog_pid=
daemon_exe=$(readlink -f "$daemon")

# Runs the init script with the test's environment: $1 the action, $2
# more daemon options.  Output in $dir/init.out.
opts="-s unix:$dir/ctl.sock -l 127.0.0.1 -m $first -M $last -F"
run_init() {
	DAEMON=$daemon PIDFILE=$dir/rtpproxy.pid RTPPROXY_DEFAULTS=$defaults \
		RTPPROXY_USER='' RTPPROXY_OPTS="$opts${2:+ $2}" \
		timeout 30 sh "$init" "$1" >>"$dir/init.out" 2>&1 </dev/null
}

# Whether process $1 runs the daemon (a zombie does not).
runs_daemon() {
	case $1 in
	'' | *[!0-9]*) return 1 ;;
	esac
	exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
	[ "${exe% (deleted)}" = "$daemon_exe" ]
}

# Ends process $1 if it runs the daemon: SIGTERM, SIGKILL after 5 s.
end_daemon() {
	runs_daemon "$1" || return 0
	kill -TERM "$1" 2>/dev/null
	i=0
	while runs_daemon "$1"; do
		if [ "$i" -ge 50 ]; then
			kill -KILL "$1" 2>/dev/null
			break
		fi
		sleep 0.1
		i=$((i + 1))
	done
	return 0
}

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
	end_daemon "$bg_pid"
	end_daemon "$(cat "$dir/rtpproxy.pid" 2>/dev/null)"
	if [ -n "$rsyslog_pid" ]; then
		kill -TERM "$rsyslog_pid" 2>/dev/null
		wait "$rsyslog_pid" 2>/dev/null
	fi
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# /dev of our own, without /dev/log.
mkdir -p "$dir/realdev" || fail "cannot create $dir/realdev"
mount --bind /dev "$dir/realdev" || fail "cannot bind /dev"
mount -t tmpfs -o mode=0755,size=1m rtpp-test-dev /dev ||
	fail "cannot mount a tmpfs on /dev"
for n in null zero random urandom; do
	if ! : >"/dev/$n" || ! mount --bind "$dir/realdev/$n" "/dev/$n"; then
		fail "cannot bind /dev/$n"
	fi
done
umount -l "$dir/realdev" || fail "cannot unmount $dir/realdev"
[ -e /dev/log ] && fail "/dev/log exists on the new /dev"

# 1. No syslog at all.
"$daemon" -p "$dir/bg.pid" -s "unix:$dir/bg.sock" -l 127.0.0.1 \
	-m "$first" -M "$last" -F </dev/null >/dev/null 2>"$dir/nolog.err"
echo $? >"$dir/nolog.rc"
bg_pid=$(cat "$dir/bg.pid" 2>/dev/null)
end_daemon "$bg_pid"
bg_pid=

# 2. rsyslogd on /dev/log.
mkdir -p "$dir/rsyslog" || fail "cannot create $dir/rsyslog"
cat >"$dir/rsyslog.conf" <<EOF
global(workDirectory="$dir/rsyslog")
module(load="imuxsock" SysSock.Name="/dev/log" SysSock.RateLimit.Interval="0")
*.* action(type="omfile" file="$dir/syslog.out")
EOF
rsyslogd -n -f "$dir/rsyslog.conf" -i "$dir/rsyslogd.pid" \
	>"$dir/rsyslogd.out" 2>&1 </dev/null &
rsyslog_pid=$!
i=0
while [ ! -S /dev/log ]; do
	kill -0 "$rsyslog_pid" 2>/dev/null ||
		fail "rsyslogd exited: $(cat "$dir/rsyslogd.out")"
	[ "$i" -lt 100 ] || fail "rsyslogd made no /dev/log within 10 s"
	sleep 0.1
	i=$((i + 1))
done

run_init start || fail "init script start answered $?: $(cat "$dir/init.out")"
: >"$dir/ready"
i=0
while [ ! -e "$dir/go" ]; do
	[ "$i" -lt 600 ] || fail "no $dir/go within 60 s"
	sleep 0.1
	i=$((i + 1))
done
run_init stop || fail "init script stop answered $?: $(cat "$dir/init.out")"

# 3. A -d in RTPPROXY_OPTS wins.
run_init start "-d WARN" ||
	fail "init script start with -d WARN answered $?: $(cat "$dir/init.out")"
run_init stop ||
	fail "init script stop after -d WARN answered $?: $(cat "$dir/init.out")"

# 4. rsyslogd writes out what it holds as it exits.
kill -TERM "$rsyslog_pid"
wait "$rsyslog_pid"
rsyslog_pid=
echo "$me: ok"
exit 0
