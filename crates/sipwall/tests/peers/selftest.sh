#!/usr/bin/env bash
# Self-test of the e2e peers with nothing in between, loopback only:
# Kamailio (registrar/proxy, 127.0.0.1:5080), bob's phone (sipp, port 5091),
# alice (sipp, port 5092) registers and calls bob. Every process is bounded by
# `timeout` and stopped on exit. Needs: kamailio (Debian package kamailio) and
# sipp (package sip-tester). Usage: selftest.sh [WORKDIR]  (default: mktemp -d)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SIPP_DIR="$HERE/sipp"
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK/run"
cp -r "$HERE/dbtext" "$WORK/dbtext"       # db_text rewrites its tables on exit
CTL="$WORK/kamailio.ctl"
PROXY=127.0.0.1:5080
KAM_PID=""; PHONE_PID=""

# Print a command (shell-quoted, copyable) on the script's stdout (fd 3, so the
# command's own redirections do not swallow it) and run it.
exec 3>&1
show() { { printf '+'; printf ' %q' "$@"; printf '\n'; } >&3; }
run() { show "$@"; "$@"; }
# For `spawn CMD... &`: exec, so that $! is the pid of CMD (timeout) itself and
# killing it stops the tool (timeout passes SIGTERM on).
spawn() { show "$@"; exec "$@"; }
now() { date +%s.%N; }
step() { awk -v a="$T0" -v b="$(now)" -v m="$1" 'BEGIN { printf "== %s (%.2fs)\n", m, b - a }'; }

cleanup() {
	# Stop only what this script started, by pid.
	[ -n "$PHONE_PID" ] && kill "$PHONE_PID" 2>/dev/null || true
	[ -n "$KAM_PID" ] && kill "$KAM_PID" 2>/dev/null || true
	wait 2>/dev/null || true
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	for f in "$WORK"/*.log "$WORK"/*.err; do
		[ -s "$f" ] && { echo "--- $f" >&2; tail -n 60 "$f" >&2; }
	done
	exit 1
}

# Common sipp options: one call, no keyboard, fail on global timeout,
# messages and errors logged under $WORK.
sipp_opts() { # NAME TIMEOUT
	echo -i 127.0.0.1 -m 1 -nostdin -timeout "$2" -timeout_error \
		-trace_msg -message_file "$WORK/$1.msg" -trace_err -error_file "$WORK/$1.err"
}

T0=$(now)
cd "$WORK"
# A stale Kamailio would share the port (SO_REUSEADDR) and steal requests.
! ss -Hlun 'sport = :5080' | grep -q . || fail "UDP port 5080 already in use"

# 1. Kamailio in the foreground (-DD), logging to stderr (-E), 60 s at most.
spawn timeout 60 kamailio -f "$HERE/kamailio.cfg" -DD -E -Y "$WORK/run" \
	-A LISTEN=udp:$PROXY -A "DBURL=\"text://$WORK/dbtext\"" -A "CTLSOCK=\"unix:$CTL\"" \
	>"$WORK/kamailio.log" 2>&1 &
KAM_PID=$!
for _ in $(seq 50); do # ready when the ctl socket answers (<= 5 s)
	kamcmd -s "unix:$CTL" core.version >/dev/null 2>&1 && break
	sleep 0.1
done
kamcmd -s "unix:$CTL" core.version >/dev/null 2>&1 || fail "kamailio did not start"
step "kamailio ready"

# 2. bob's phone: REGISTER (401, 200), then answer one call (uas_answer.xml as
#    the out-of-call scenario) and exit when it is hung up.
# shellcheck disable=SC2046
spawn timeout 30 sipp $PROXY -sf "$SIPP_DIR/phone.xml" -oocsf "$SIPP_DIR/uas_answer.xml" \
	-p 5091 -key contact_port 5091 -s bob -ap bob-secret $(sipp_opts phone 25s) >"$WORK/phone.log" 2>&1 &
PHONE_PID=$!
for _ in $(seq 50); do # wait until bob's binding is in usrloc (<= 5 s)
	kamcmd -s "unix:$CTL" ul.lookup location bob >/dev/null 2>&1 && break
	sleep 0.1
done
kamcmd -s "unix:$CTL" ul.lookup location bob >/dev/null 2>&1 || fail "bob did not register"
step "bob registered"

# 3. alice registers, then calls bob, from the same port.
# shellcheck disable=SC2046
run timeout 20 sipp $PROXY -sf "$SIPP_DIR/register_auth.xml" \
	-p 5092 -s alice -ap alice-secret $(sipp_opts alice-reg 15s) >"$WORK/alice-reg.log" 2>&1 ||
	fail "alice REGISTER"
step "alice registered"
# shellcheck disable=SC2046
run timeout 20 sipp $PROXY -sf "$SIPP_DIR/uac_call_auth.xml" \
	-p 5092 -s bob -key caller alice -au alice -ap alice-secret $(sipp_opts alice-call 15s) \
	>"$WORK/alice-call.log" 2>&1 || fail "alice call to bob"
step "call done"

rc=0; wait "$PHONE_PID" || rc=$?
PHONE_PID=""
[ "$rc" = 0 ] || fail "bob's phone exited $rc"
step "phone exited"

# 4. The location table (usrloc in memory) over the ctl socket.
run kamcmd -s "unix:$CTL" ul.dump >"$WORK/ul.dump"
grep -E 'AoR:|Address:' "$WORK/ul.dump"
for u in alice bob; do
	grep -q "AoR: $u\$" "$WORK/ul.dump" || fail "$u not in location table"
done

# 5. Stop Kamailio (SIGTERM; it stops its children and exits).
kill "$KAM_PID"; wait "$KAM_PID" 2>/dev/null || true
KAM_PID=""
step "kamailio stopped"
echo "selftest: PASS (work dir $WORK)"
