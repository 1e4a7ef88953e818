#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/.

Small, valid-looking inputs the fuzzer mutates from: command sessions,
metrics requests, RTP streams, ad-hoc and PCAP recordings, WAV files, latching sequences.
Run it again after changing a format; the files are committed.
"""
import os
import struct
import wave
import io

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- command: one command per line, run against one session table ---------
COMMANDS = {
    "call": "U c1 127.0.0.1 4000 ftag;1\nL c1 127.0.0.1 4002 ftag;1 ttag;1\n"
            "Q c1 ftag;1 ttag;1\nI\nG nsess_active\nD c1 ftag\n",
    "modifiers": "Uasw6z20c0,8,101 c2 ::1 4000 f\nLie c2 127.0.0.1 0 f t\n"
                 "Uz15 c3 127.0.0.1 4000 f\nUc8,,0 c3 127.0.0.1 4000 f\n",
    "play": "U c4 127.0.0.1 4000 f\nP-1 c4 /nonexistent/prompt 0,8 f\n"
            "P c4 p session f\nS c4 f\nP0 c4 p 18 f t\n",
    "record": "U c5 127.0.0.1 4000 f\nR c5 f\nC c5 ../../etc/passwd f\n"
              "C c5 udp:127.0.0.1:9000 f\nC c5 udp6:[::1]:9 f t\n",
    "notify": "U c6 127.0.0.1 4000 f t /tmp/rtpp-fuzz-notify.sock tag%20x\n"
              "U c6 127.0.0.1 4000 f t unix:/tmp/other.sock\n"
              "U c6 127.0.0.1 4000 f t /tmp/s bad%zz\n",
    "versions": "V\nVF 20050322\nVF 20081224 x\nV a b\nvf\nX\nZ\n\n",
    "streams": "U c7 127.0.0.1 4000 f;1\nU c7 127.0.0.1 4004 f;2\n"
               "L c7 127.0.0.1 5000 f;2 t;2\nD c7 f\nI\n",
    "exhaust": "".join(f"U ex{i} 127.0.0.1 {4000 + 2 * i} f\n" for i in range(24)) + "X\n",
    "weak": "Uw c8 127.0.0.1 4000 f\nLw c8 127.0.0.1 4002 f t\nD c8 f t\nQ c8 f t\n",
    "cookie": "ck123 U c9 127.0.0.1 4000 f\r\n",
    "bridge": "\x01\nUie cb 127.0.0.1 4000 f\nLei cb 127.0.0.2 4000 f t\nUee cb 127.0.0.1 4000 f\n",
    "extensions": "U e1 127.0.0.1 4000 f && M3:1 Dd%20x+y 101 h\n"
                  "Ul127.0.0.1 e2 127.0.0.1 4000 f\nU6r[::1]n e3 ::1 4000 f\n"
                  "UR2001:db8::1c0,8 e4 127.0.0.1 4000 f\nUn e1 127.0.0.1 4000 f\n"
                  "Qv e1 f t ttl npkts_ina rtpa_nlost && D\nNa e1 f\nIbl\nGv nsess_created\n"
                  "U e5 127.0.0.1 4000 f /tmp/rtpp-fuzz-notify.sock r%20x && M3:1 t\n"
                  "U e6 1.2.3.4 1 f && && D\nQ e1 f && D x\nUc, e7 127.0.0.1 4000 f\n",
    "hostile": "U \x80\xff\xfe 127.0.0.1 4000 \xc3\x28\nU " + "x" * 1100 + " 1.2.3.4 1 f\n"
               "U c 999.1.1.1 99999 f\nU c ::ffff:1.2.3.4 4000 f\nDw c f\n",
}
for name, text in COMMANDS.items():
    put("command", name, text.encode("latin-1"))


# --- framing: [chunk size seed] then what a stream client sends ------------
put("framing", "pipelined", b"\x03V\nVF 20040107\r\nU c1 127.0.0.1 4000 f\nIb\nD c1 f")
put("framing", "over_long", b"\x07" + b"x" * 8300 + b"\nV\n\n\r\n")
put("framing", "compound", b"\x01U c2 127.0.0.1 4000 f && M3:1 t 101 h\nQv c2 f t && D\n")


# --- http: [chunk size seed] then what a metrics client sends ---------------
put("http", "prometheus", b"\x05GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9099\r\n"
    b"User-Agent: Prometheus/2.42.0\r\nAccept: application/openmetrics-text;version=1.0.0,"
    b"text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\nAccept-Encoding: gzip\r\n"
    b"X-Prometheus-Scrape-Timeout-Seconds: 1\r\n\r\n")
put("http", "curl_query", b"\x01GET /metrics?name[]=x HTTP/1.0\r\nUser-Agent: curl\r\n\r\n")
put("http", "post_body", b"\x0bPOST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
put("http", "root", b"\x20GET / HTTP/1.1\r\nHost: x\r\n\r\n")
put("http", "long_header", b"\x3fGET /metrics HTTP/1.1\r\nX-Junk: " + b"a" * 8300 + b"\r\n\r\n")
put("http", "many_headers", b"\x02GET /metrics HTTP/1.1\r\n" + b"".join(
    b"H%d: v\r\n" % i for i in range(40)) + b"\r\n")
put("http", "junk", b"\x07\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
put("http", "cut_short", b"\x03GET /metrics HTTP/1.1\r\nHost: x\r\n")


# --- rtp: [target][gap ms, len lo, len hi, packet]* -----------------------
def rtp(pt, seq, ts, payload, marker=0, ssrc=0x1234, b0=0x80):
    return struct.pack("!BBHII", b0, (marker << 7) | pt, seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc) + payload


def stream(target, packets):
    out = bytes([target])
    for gap, p in packets:
        out += bytes([gap]) + struct.pack("<H", len(p)) + p
    return out


put("rtp", "pcmu_20_to_40", stream(3, [(20, rtp(0, i, i * 160, bytes(160), i == 0))
                                       for i in range(12)]))
put("rtp", "pcma_split", stream(0, [(30, rtp(8, i, i * 240, bytes(240))) for i in range(6)]))
put("rtp", "gsm", stream(5, [(20, rtp(3, i, i * 160, bytes(33))) for i in range(8)]))
put("rtp", "g729_sid", stream(1, [(20, rtp(18, i, i * 160, bytes(20 if i % 3 else 22)))
                                  for i in range(8)]))
put("rtp", "reorder", stream(2, [(20, rtp(0, s, s * 160, bytes(160))) for s in (0, 2, 1, 3, 3, 9, 4)]))
put("rtp", "ssrc_change", stream(3, [(20, rtp(0, i, i * 160, bytes(160), ssrc=i // 3))
                                     for i in range(9)]))
put("rtp", "ts_jump", stream(3, [(20, rtp(0, i, (i * 160) if i < 4 else 0x7FFF0000 + i, bytes(160)))
                                 for i in range(8)]))
put("rtp", "csrc_ext_pad", stream(3, [(20, rtp(0, 1, 160, bytes([0, 0, 0, 1, 0xbe, 0xde, 0, 1, 9, 9, 9, 9])
                                               + bytes(160) + bytes([0, 2]), b0=0x80 | 0x30 | 1))]))
put("rtp", "not_rtp", stream(1, [(10, b"\x00" * 20), (10, b"\x80"), (10, b"garbage!" * 4)]))
put("rtp", "huge", stream(99, [(0, rtp(0, 1, 160, bytes(8000)))]))


def event(code, end, duration):
    return bytes([code, (0x80 if end else 0) | 10]) + struct.pack("!H", duration)


put("rtp", "dtmf", stream(1, [(20, rtp(101, i, 8000, event(5, i >= 2, 160 * (i + 1))))
                              for i in range(5)]
                      + [(20, rtp(101, 6, 9000, event(17, True, 800))),
                         (20, rtp(101, 7, 9160, event(11, False, 160)))]))
put("rtp", "seq_wrap", stream(1, [(20, rtp(0, s, s * 160, bytes(160)))
                                  for s in (65533, 65534, 65535, 0, 65532, 1, 1, 700, 2)]))


# --- rtcp: [flags, gap ms, len lo, len hi, datagram]*; flags bit 0 callee,
# bit 1 RTP ------------------------------------------------------------------
def rtcp_sr(ssrc, ntp, blocks=b"", count=0):
    body = struct.pack("!IQIII", ssrc, ntp, 8000, 50, 8000) + blocks
    return struct.pack("!BBH", 0x80 | count, 200, len(body) // 4) + body


def rtcp_rr(ssrc, blocks=b"", count=0):
    body = struct.pack("!I", ssrc) + blocks
    return struct.pack("!BBH", 0x80 | count, 201, len(body) // 4) + body


def report_block(ssrc, lsr, dlsr, fraction=64, lost=12, jitter=80):
    return struct.pack("!IIIIII", ssrc, (fraction << 24) | lost, 1200, jitter, lsr, dlsr)


def sdes(ssrc, cname):
    item = bytes([1, len(cname)]) + cname + b"\x00"
    body = struct.pack("!I", ssrc) + item
    body += bytes(-len(body) % 4)
    return struct.pack("!BBH", 0x81, 202, len(body) // 4) + body


def dgrams(items):
    out = b""
    for flags, gap, d in items:
        out += bytes([flags, gap]) + struct.pack("<H", len(d)) + d
    return out


SR = rtcp_sr(0x1234, 0xE1000000_34567800, report_block(0x9ABC, 0, 0), 1) + sdes(0x1234, b"a@h")
RR = rtcp_rr(0x9ABC, report_block(0x1234, 0x34567800, 6554), 1)
put("rtcp", "sr_rr_round_trip", dgrams([(2, 20, rtp(0, i, i * 160, bytes(160))) for i in range(3)]
                                       + [(0, 20, SR), (1, 150, RR)]))
put("rtcp", "bye_app_padding", dgrams([(0, 5, rtcp_rr(1) + struct.pack("!BBHI", 0xA1, 203, 1, 1)
                                        + struct.pack("!BBHI4sI", 0xA0, 204, 3, 1, b"name", 0)),
                                       (1, 5, rtcp_rr(2)[:4] + bytes(4))]))
put("rtcp", "malformed", dgrams([(0, 1, SR[:-4]), (1, 1, RR[:5]), (0, 1, b"\x40" + SR[1:]),
                                 (1, 1, bytes([0x9F]) + RR[1:])]))


# --- recording: ad-hoc (40-byte header) and PCAP --------------------------
def adhoc(packets):
    out = b""
    for (ip, port, t, data) in packets:
        if ":" in ip:
            fam, addr = 10, bytes(16)
            addr = b"\x00" * 15 + b"\x01"
        else:
            fam, addr = 2, bytes(int(x) for x in ip.split("."))
        block = struct.pack("<H", fam) + struct.pack("!H", port) + addr
        block = block.ljust(20, b"\x00")
        out += block + bytes(4) + struct.pack("<d", t) + struct.pack("<H", len(data)) + bytes(6) + data
    return out


def ipv4_udp(src, sport, dst, dport, data):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                      bytes(int(x) for x in src.split(".")), bytes(int(x) for x in dst.split(".")))
    return hdr + udp


def pcap(frames, linktype=0):
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for i, f in enumerate(frames):
        out += struct.pack("<IIII", 1700000000 + i, 20000 * i, len(f), len(f)) + f
    return out


pkts = [rtp(0, i, i * 160, bytes(160)) for i in range(3)]
put("recording", "adhoc_v4", adhoc([("127.0.0.1", 4000, 1.7e9 + i, p) for i, p in enumerate(pkts)]))
put("recording", "adhoc_v6", adhoc([("::1", 4000, 1.7e9, pkts[0])]))
put("recording", "adhoc_truncated", adhoc([("127.0.0.1", 4000, 0.0, pkts[0])])[:-30])
put("recording", "pcap_null", pcap([struct.pack("<I", 2) + ipv4_udp("127.0.0.1", 4000, "127.0.0.1", 35000, p)
                                    for p in pkts]))
put("recording", "pcap_raw", pcap([ipv4_udp("10.0.0.1", 4000, "10.0.0.2", 5000, pkts[0])], linktype=101))
eth = bytes(12) + b"\x81\x00\x00\x01" + b"\x08\x00" + ipv4_udp("127.0.0.1", 1, "127.0.0.1", 2, pkts[1])
put("recording", "pcap_vlan", pcap([eth], linktype=1))
v6 = (struct.pack("!IHBB", 0x60000000, 8 + 160, 17, 64) + bytes(15) + b"\x01" + bytes(15) + b"\x01"
      + struct.pack("!HHHH", 4000, 5000, 168, 0) + bytes(160))
put("recording", "pcap_v6", pcap([struct.pack("<I", 10) + v6]))
put("recording", "pcap_big_endian", struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 0))


# --- wav --------------------------------------------------------------------
def wav(rate=8000, channels=1, width=2, frames=80):
    b = io.BytesIO()
    with wave.open(b, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(frames * channels * width))
    return b.getvalue()


put("wav", "pcm16_8k", wav())
put("wav", "pcm16_16k_stereo", wav(16000, 2))
put("wav", "pcm8", wav(width=1))
w = wav()
put("wav", "extra_chunk", w[:12] + b"LIST\x04\x00\x00\x00abcd" + w[12:])
put("wav", "data_size_unknown", w[:40] + b"\xff\xff\xff\xff" + w[44:])
ext = (b"RIFF" + struct.pack("<I", 0) + b"WAVE" + b"fmt " + struct.pack("<I", 40)
       + struct.pack("<HHIIHHHHI", 0xFFFE, 1, 8000, 16000, 2, 16, 22, 16, 4)
       + struct.pack("<H", 1) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
       + b"data" + struct.pack("<I", 4) + bytes(4))
put("wav", "extensible", ext)
put("wav", "rifx", b"RIFX" + w[4:])

# --- latch: (op, arg) pairs -------------------------------------------------
put("latch", "prefill_then_stranger", bytes([2, 0x80, 0, 0, 1, 5, 3, 100, 0, 9]))
put("latch", "resignal_window", bytes([0, 0, 2, 0x85, 1, 9, 3, 255, 3, 255, 3, 255, 3, 255, 0, 10]))
put("latch", "asymmetric", bytes([2, 0xC0, 0, 1, 0, 4, 2, 0x40, 0, 8]))


# --- handover: a state as rtpp_handover::state writes it ------------------
# Descriptors are indexes into the fuzz target's list: 0 and 1 UDP sockets
# on 127.0.0.1:21960/21961 (a leg), 2 a UDP socket (the control socket),
# 3 a TCP listener on 127.0.0.1:21962 (--metrics), 4 a regular file (-A).
def u8(v): return struct.pack("<B", v)
def u16(v): return struct.pack("<H", v)
def u32(v): return struct.pack("<I", v)
def u64(v): return struct.pack("<Q", v)
def f64(v): return struct.pack("<d", v)
def lp(b): return u32(len(b)) + b
def ip4(a): return u8(4) + bytes(a)


def peer(addr=None):
    out = (u8(1) + ip4([127, 0, 0, 1]) + u16(addr)) if addr else u8(0)
    return out + u8(addr is not None) + u8(0) * 2 + u8(0) * 3 + u64(3) + u64(516)


def histogram(n):
    return b"".join(f64(i) for i in range(n)) + u64(0) * n + u64(0) + f64(0)


def quality():
    rtp = u8(0) + u64(0) * 5 + u8(0) + u16(0) + u32(8000) + u8(1) + u8(0) + u8(0)
    rtp += u64(0) * 4 + f64(0) * 2 + u64(0) + u8(0) + u64(0) * 2
    rtcp = u64(0) * 2 + u8(0) * 4 + u64(0) + u64(0) * 3 + u32(0) + u64(0) * 2
    return rtp + rtcp


def session():
    s = lp(b"call") + lp(b"ftag") + u8(0)
    s += ip4([127, 0, 0, 1]) * 2
    s += u8(1) + u16(21960) + ip4([127, 0, 0, 1]) + u32(0) + u32(1) + u8(0)
    for _ in range(2):  # RTP, RTCP
        s += peer(4000) + peer() + u64(3) * 3 + u8(0) * 2
    s += u8(1) + u8(0) * 2 + u8(0) * 2
    s += struct.pack("<q", -5 * 10**9) * 2 + struct.pack("<q", -9 * 10**9)
    s += u8(0) * 2 + u8(0) + u8(0) * 2 + u8(0) * 2 + u64(0) + u64(0) * 9
    s += (u64(0) * 6 + u8(0)) * 2 + u8(0) * 2 + quality() * 2
    return s


state = b"RTPPSTAT" + u32(1) + u32(12345)
state += u64(1) * 8 + f64(1.5) + u64(2) * 14 + f64(0) + u64(0) * 12
state += u8(0) + u64(0) * (15 * 34) + histogram(9) + histogram(8) + histogram(7) + f64(0)
state += u8(1) + u8(1) + u32(4) + lp(b"/tmp/rtpp-fuzz-handover.acct")  # -A
state += u8(0) * 2  # no -n, no --hep
state += u8(1) + u32(2) + u8(0) + u32(0)  # UDP control, empty reply cache
state += u8(1) + u32(3) + ip4([127, 0, 0, 1]) + u16(21962)  # --metrics
state += u32(1) + session()
put("handover", "one-session", state)
put("handover", "header-only", b"RTPPSTAT" + u32(1) + u32(12345))
