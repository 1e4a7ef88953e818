-- A HEPv3 dissector for tshark, for the tests only: Wireshark 4.0 (Debian
-- 12) has no HEP dissector of its own. Written from the HEP specification
-- (sipcapture's HEP-EEP document), independently of src/rtpp_hep.rs: it
-- walks whatever chunks arrive, checks every length, and hands the payload
-- to tshark's own JSON dissector, so a payload that is not JSON shows.
--
-- Use: tshark -X lua_script:tests/hep/hep.lua -d udp.port==PORT,hep ...

local hep = Proto("hep", "HEP version 3 (EEP)")

local f = {
  version = ProtoField.uint8("hep.version", "Version"),
  length = ProtoField.uint16("hep.length", "Total length"),
  ip_family = ProtoField.uint8("hep.ip_family", "IP family"),
  ip_proto = ProtoField.uint8("hep.ip_proto", "IP protocol"),
  src_ip = ProtoField.ipv4("hep.src_ip", "Source IPv4"),
  dst_ip = ProtoField.ipv4("hep.dst_ip", "Destination IPv4"),
  src_ip6 = ProtoField.ipv6("hep.src_ip6", "Source IPv6"),
  dst_ip6 = ProtoField.ipv6("hep.dst_ip6", "Destination IPv6"),
  src_port = ProtoField.uint16("hep.src_port", "Source port"),
  dst_port = ProtoField.uint16("hep.dst_port", "Destination port"),
  time_sec = ProtoField.uint32("hep.time_sec", "Seconds"),
  time_usec = ProtoField.uint32("hep.time_usec", "Microseconds"),
  proto_type = ProtoField.uint8("hep.proto_type", "Protocol type"),
  capture_id = ProtoField.uint32("hep.capture_id", "Capture agent id"),
  correlation_id = ProtoField.string("hep.correlation_id", "Correlation id"),
  payload = ProtoField.bytes("hep.payload", "Payload"),
  unknown = ProtoField.uint16("hep.unknown_chunk", "Unknown chunk type"),
  errors = ProtoField.string("hep.error", "Error"),
}
hep.fields = {
  f.version, f.length, f.ip_family, f.ip_proto, f.src_ip, f.dst_ip,
  f.src_ip6, f.dst_ip6, f.src_port, f.dst_port, f.time_sec, f.time_usec,
  f.proto_type, f.capture_id, f.correlation_id, f.payload, f.unknown,
  f.errors,
}

-- Generic chunk type -> field and the value length it must have (0: any).
local generic = {
  [0x0001] = { f.ip_family, 1 }, [0x0002] = { f.ip_proto, 1 },
  [0x0003] = { f.src_ip, 4 }, [0x0004] = { f.dst_ip, 4 },
  [0x0005] = { f.src_ip6, 16 }, [0x0006] = { f.dst_ip6, 16 },
  [0x0007] = { f.src_port, 2 }, [0x0008] = { f.dst_port, 2 },
  [0x0009] = { f.time_sec, 4 }, [0x000a] = { f.time_usec, 4 },
  [0x000b] = { f.proto_type, 1 }, [0x000c] = { f.capture_id, 4 },
  [0x0011] = { f.correlation_id, 0 }, [0x000f] = { f.payload, 0 },
}

local json = Dissector.get("json")

function hep.dissector(tvb, pinfo, tree)
  local n = tvb:len()
  if n < 6 or tvb(0, 4):string() ~= "HEP3" then return 0 end
  pinfo.cols.protocol = "HEP3"
  local t = tree:add(hep, tvb())
  t:add(f.version, tvb(3, 1), 3)
  t:add(f.length, tvb(4, 2))
  if tvb(4, 2):uint() ~= n then
    t:add(f.errors, "total length is not the datagram's")
  end
  local off = 6
  while off < n do
    if n - off < 6 then
      t:add(f.errors, "truncated chunk header")
      break
    end
    local vendor, ctype, clen = tvb(off, 2):uint(), tvb(off + 2, 2):uint(), tvb(off + 4, 2):uint()
    if clen < 6 or off + clen > n then
      t:add(f.errors, "chunk length out of bounds")
      break
    end
    local known = vendor == 0 and generic[ctype]
    if not known then
      t:add(f.unknown, tvb(off + 2, 2))
    elseif known[2] ~= 0 and known[2] ~= clen - 6 then
      t:add(f.errors, string.format("chunk 0x%04x has %d value bytes", ctype, clen - 6))
    elseif clen > 6 then
      local value = tvb(off + 6, clen - 6)
      t:add(known[1], value)
      if ctype == 0x000f then
        json:call(value:tvb(), pinfo, tree)
      end
    end
    off = off + clen
  end
  return n
end

DissectorTable.get("udp.port"):add_for_decode_as(hep)
