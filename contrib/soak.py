#!/usr/bin/env python3
"""Soak load for rtpproxy on loopback: many calls relaying RTP both ways
with churn, reporting loss, latency and the daemon's RSS over time.

Run through contrib/soak.sh, which builds and starts the daemon. Every
call is set up with U/L over the UDP control socket; both of its parties
send a 172-byte G.711-shaped packet every PTIME ms carrying its send time,
and the receiving party measures the one-way latency through the relay.
Every second the oldest calls stop sending, drain and are deleted (D), and
as many new ones are set up, so the whole population turns over about once
a minute. Everything is bounded in time and goes to 127.0.0.1 only.
"""
import argparse
import os
import resource
import selectors
import socket
import struct
import sys
import time

LO = "127.0.0.1"
HEADER = struct.Struct("!BBHII")
STAMP = struct.Struct("!QI")  # send time (ns), call number


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ctl", default=f"{LO}:22999", help="daemon's UDP control address")
    p.add_argument("--pid", type=int, required=True, help="daemon pid, for RSS and CPU")
    p.add_argument("--sessions", type=int, default=500)
    p.add_argument("--seconds", type=int, default=600)
    p.add_argument("--ptime", type=int, default=20, help="ms between packets")
    p.add_argument("--lifetime", type=int, default=60, help="seconds a call lives")
    p.add_argument("--report", type=int, default=10, help="seconds between report lines")
    return p.parse_args()


class Control:
    """The daemon's UDP control socket, one command at a time."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.addr = (host, int(port))
        if not host.startswith("127."):
            sys.exit("soak: the control address must be on loopback")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LO, 0))
        self.sock.settimeout(1.0)
        self.n = 0

    def command(self, cmd):
        self.n += 1
        cookie = f"s{self.n}"
        for _ in range(3):
            self.sock.sendto(f"{cookie} {cmd}".encode(), self.addr)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    data = self.sock.recv(65536).decode(errors="replace")
                except socket.timeout:
                    break
                if data.startswith(cookie + " "):
                    return data[len(cookie) + 1:].strip()
        raise RuntimeError(f"no reply to {cmd!r}")


class Call:
    def __init__(self, number, ctl):
        self.number = number
        self.id = f"soak{number}"
        self.caller = self._socket()
        self.callee = self._socket()
        u = ctl.command(f"U {self.id} {LO} {self.caller.getsockname()[1]} ftag")
        l = ctl.command(f"L {self.id} {LO} {self.callee.getsockname()[1]} ftag ttag")
        if u.startswith("E") or l.startswith("E"):
            self.close()
            raise RuntimeError(f"call setup failed: U {u}, L {l}")
        # U answers the port the callee sends to, L the caller's.
        self.to_caller_leg = (LO, int(l.split()[0]))
        self.to_callee_leg = (LO, int(u.split()[0]))
        self.seq = 0
        self.sent = 0
        self.received = 0
        self.closing_at = None

    @staticmethod
    def _socket():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((LO, 0))
        s.setblocking(False)
        return s

    def send(self, payload_tail):
        self.seq = (self.seq + 1) & 0xFFFF
        stamp = STAMP.pack(time.monotonic_ns(), self.number)
        for sock, to in ((self.caller, self.to_caller_leg), (self.callee, self.to_callee_leg)):
            pkt = HEADER.pack(0x80, 0, self.seq, self.seq * 160, self.number) + stamp + payload_tail
            try:
                sock.sendto(pkt, to)
                self.sent += 1
            except (BlockingIOError, OSError):
                pass

    def close(self):
        self.caller.close()
        self.callee.close()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main():
    args = parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctl = Control(args.ctl)
    if ctl.command("V") != "20040107":
        sys.exit("soak: the daemon does not answer V")
    sel = selectors.DefaultSelector()
    calls = {}
    next_number = 0
    failures = 0

    def open_call():
        nonlocal next_number, failures
        try:
            c = Call(next_number, ctl)
        except RuntimeError as e:
            failures += 1
            print(f"soak: {e}", file=sys.stderr)
            return
        calls[c.number] = c
        sel.register(c.caller, selectors.EVENT_READ, c)
        sel.register(c.callee, selectors.EVENT_READ, c)
        c.born = time.monotonic()
        next_number += 1

    for _ in range(args.sessions):
        open_call()
    print(f"soak: {len(calls)} calls set up, ptime {args.ptime} ms, "
          f"{args.seconds} s, each call lives about {args.lifetime} s")
    print("  (gap: sent minus received in the interval, packets in flight at its ends;\n"
          "   the totals at the end count every packet)")
    print("  time  calls  created  deleted    sent/s     gap   gap%   lat p50/p99/max ms   RSS KiB  CPU%")

    tail = bytes(160 - STAMP.size)
    ptime = args.ptime / 1000.0
    start = time.monotonic()
    end = start + args.seconds
    next_tick = start
    next_churn = start + 1.0
    next_report = start + args.report
    interval = {"sent": 0, "received": 0, "lat": []}
    totals = {"sent": 0, "received": 0, "deleted": 0, "lat_max": 0.0, "lat": []}
    rss_first = rss_kib(args.pid)
    rss_series = [rss_first]
    cpu_last, cpu_t = cpu_seconds(args.pid), start
    created_before = len(calls)

    def receive(timeout):
        for key, _ in sel.select(timeout):
            sock, c = key.fileobj, key.data
            for _ in range(64):
                try:
                    data = sock.recv(2048)
                except (BlockingIOError, OSError):
                    break
                if len(data) >= HEADER.size + STAMP.size:
                    sent_ns, _ = STAMP.unpack_from(data, HEADER.size)
                    interval["lat"].append((time.monotonic_ns() - sent_ns) / 1e6)
                c.received += 1
                interval["received"] += 1

    def retire(c):
        sel.unregister(c.caller)
        sel.unregister(c.callee)
        ctl.command(f"D {c.id} ftag ttag")
        totals["sent"] += c.sent
        totals["received"] += c.received
        totals["deleted"] += 1
        c.close()
        del calls[c.number]

    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now >= next_tick:
            # Send in slices with reads between, so a packet waits in our
            # socket for at most one slice before its latency is taken.
            live = [c for c in calls.values() if c.closing_at is None]
            for i in range(0, len(live), 50):
                for c in live[i:i + 50]:
                    c.send(tail)
                    interval["sent"] += 2
                receive(0)
            next_tick += ptime
            if next_tick < now:
                next_tick = now + ptime
        if now >= next_churn:
            # Churn: the calls past their lifetime stop sending now, and
            # are deleted half a second later, once their packets are in.
            for c in list(calls.values()):
                if c.closing_at is not None and now >= c.closing_at:
                    retire(c)
            quota = max(1, args.sessions // args.lifetime)
            old = sorted((c for c in calls.values() if c.closing_at is None), key=lambda c: c.born)
            for c in old[:quota]:
                if now - c.born >= args.lifetime * 0.5:
                    c.closing_at = now + 0.5
            while len([c for c in calls.values() if c.closing_at is None]) < args.sessions:
                before = len(calls)
                open_call()
                if len(calls) == before:
                    break
            next_churn += 1.0
        if now >= next_report:
            rss = rss_kib(args.pid)
            rss_series.append(rss)
            cpu = cpu_seconds(args.pid)
            cpu_pct = 100.0 * (cpu - cpu_last) / max(now - cpu_t, 1e-6)
            cpu_last, cpu_t = cpu, now
            lat = sorted(interval["lat"])
            lost = max(0, interval["sent"] - interval["received"])
            loss = 100.0 * lost / max(1, interval["sent"])
            print(f"{now - start:6.0f} {len(calls):6d} {next_number:8d} {totals['deleted']:8d} "
                  f"{interval['sent'] / args.report:9.0f} {lost:7d} {loss:6.3f}   "
                  f"{percentile(lat, 0.5):5.2f}/{percentile(lat, 0.99):5.2f}/{(lat[-1] if lat else 0):6.2f}"
                  f"   {rss:7d} {cpu_pct:5.1f}", flush=True)
            totals["lat"].extend(lat[:: max(1, len(lat) // 2000)])
            totals["lat_max"] = max(totals["lat_max"], lat[-1] if lat else 0.0)
            interval = {"sent": 0, "received": 0, "lat": []}
            next_report += args.report
        wait = min(next_tick, next_churn, next_report, end) - time.monotonic()
        receive(max(0.0, wait))

    # Stop sending, let the last packets arrive, then delete every call.
    drain_until = time.monotonic() + 0.5
    while time.monotonic() < drain_until:
        receive(0.05)
    for c in list(calls.values()):
        retire(c)
    lat = sorted(totals["lat"])
    lost = totals["sent"] - totals["received"]
    info = ctl.command("G nsess_active nsess_created npkts_relayed npkts_discard")
    rss_last = rss_kib(args.pid)
    print(f"soak: {args.seconds} s, {next_number} calls set up ({next_number - created_before} by "
          f"churn), {totals['deleted']} deleted, {failures} setups refused")
    print(f"soak: packets sent {totals['sent']}, received {totals['received']}, lost {lost} "
          f"({100.0 * lost / max(1, totals['sent']):.4f}%)")
    print(f"soak: latency p50 {percentile(lat, 0.5):.2f} ms, p99 {percentile(lat, 0.99):.2f} ms, "
          f"max {totals['lat_max']:.2f} ms")
    print(f"soak: daemon RSS {rss_first} KiB at start, {min(rss_series)}..{max(rss_series)} KiB "
          f"during, {rss_last} KiB at the end; counters: {info}")


if __name__ == "__main__":
    main()
