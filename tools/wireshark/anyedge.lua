-- anyedge backbone dissector for Wireshark/tshark.
--
--   tshark -X lua_script:tools/wireshark/anyedge.lua -r pop-paris.pcap
--   (or copy it into ~/.local/lib/wireshark/plugins/)
--
-- Decodes the authentication envelope every backbone datagram travels in (UDP 6081 CCN
-- data, 6082 CLB<->backend, 6084 connection-table sync, 6090 liveness probes), the CCN
-- header inside data envelopes, and hands the inner IPv4/IPv6 packet to Wireshark's own
-- dissectors. Layouts: proto/src/seal.rs and proto/src/ccn.rs.

local anyedge = Proto("anyedge", "anyedge backbone envelope")
local ccn = Proto("anyedge_ccn", "anyedge CCN header")

local kinds = { [1] = "data", [2] = "probe", [3] = "probe answer", [4] = "sync", [5] = "backend" }
local node_kinds = { [1] = "pop", [2] = "clb", [3] = "backend" }

local f = anyedge.fields
f.version = ProtoField.uint8("anyedge.version", "Version", base.DEC)
f.kind = ProtoField.uint8("anyedge.kind", "Kind", base.DEC, kinds)
f.sender = ProtoField.uint32("anyedge.sender", "Sender", base.HEX)
f.receiver = ProtoField.uint32("anyedge.receiver", "Receiver", base.HEX)
f.seq = ProtoField.uint64("anyedge.seq", "Sequence", base.DEC)
f.salt = ProtoField.uint24("anyedge.salt", "Salt (sender's, per start)", base.HEX)
f.tag = ProtoField.bytes("anyedge.tag", "Tag (AES-256-GCM; version 2: Poly1305; 128 bits)")
f.sender_name = ProtoField.string("anyedge.sender_name", "Sender node")
f.receiver_name = ProtoField.string("anyedge.receiver_name", "Receiver node")

local c = ccn.fields
c.version = ProtoField.uint8("anyedge.ccn.version", "Version", base.DEC)
c.reply = ProtoField.bool("anyedge.ccn.reply", "Reply (region to POP)")
c.next = ProtoField.uint8("anyedge.ccn.next_header", "Next header", base.DEC, { [4] = "IPv4", [41] = "IPv6" })
c.pop = ProtoField.uint16("anyedge.ccn.pop_id", "POP id", base.DEC)
c.flow = ProtoField.uint32("anyedge.ccn.flow_hash", "Flow hash", base.HEX)
c.len = ProtoField.uint16("anyedge.ccn.payload_len", "Payload length", base.DEC)
c.hops = ProtoField.uint8("anyedge.ccn.hop_limit", "Hop limit", base.DEC)
c.segment = ProtoField.uint16("anyedge.ccn.segment", "Segment size (TCP super-packet)", base.DEC)

local ip = Dissector.get("ip")
local ipv6 = Dissector.get("ipv6")
local data = Dissector.get("data")

local function node_name(id)
  local kind = bit.rshift(id, 28)
  local region = bit.band(bit.rshift(id, 12), 0xffff)
  local n = bit.band(id, 0xfff)
  local name = node_kinds[kind] or "?"
  if kind == 1 then return string.format("pop#%d", bit.band(id, 0xffff)) end
  return string.format("%s#%d/%d", name, region, n)
end

local function inner(tvb, pinfo, tree)
  if tvb:len() == 0 then return end
  local v = bit.rshift(tvb(0, 1):uint(), 4)
  if v == 4 then ip:call(tvb, pinfo, tree)
  elseif v == 6 then ipv6:call(tvb, pinfo, tree)
  else data:call(tvb, pinfo, tree) end
end

function anyedge.dissector(tvb, pinfo, tree)
  if tvb:len() < 36 then return 0 end
  local vk = tvb(0, 1):uint()
  local version, kind = bit.rshift(vk, 4), bit.band(vk, 0x0f)
  if (version ~= 2 and version ~= 3) or kinds[kind] == nil then return 0 end
  pinfo.cols.protocol = "anyedge"
  local payload_len = tvb:len() - 36
  local t = tree:add(anyedge, tvb(), "anyedge envelope: " .. kinds[kind])
  t:add(f.version, tvb(0, 1), version)
  t:add(f.kind, tvb(0, 1), kind)
  t:add(f.salt, tvb(1, 3))
  t:add(f.sender, tvb(4, 4))
  t:add(f.sender_name, tvb(4, 4), node_name(tvb(4, 4):uint()))
  t:add(f.receiver, tvb(8, 4))
  t:add(f.receiver_name, tvb(8, 4), node_name(tvb(8, 4):uint()))
  t:add(f.seq, tvb(12, 8))
  t:add(f.tag, tvb(20 + payload_len, 16))
  pinfo.cols.info = string.format("%s %s -> %s seq %s", kinds[kind], node_name(tvb(4, 4):uint()),
    node_name(tvb(8, 4):uint()), tostring(tvb(12, 8):uint64()))
  local payload = tvb(20, payload_len):tvb()
  if kind == 1 and payload_len >= 12 then
    local h = tree:add(ccn, payload(0, 12), "anyedge CCN header")
    local vf = payload(0, 1):uint()
    h:add(c.version, payload(0, 1), bit.rshift(vf, 4))
    h:add(c.reply, payload(0, 1), bit.band(vf, 1) == 1)
    h:add(c.next, payload(1, 1))
    h:add(c.pop, payload(2, 2))
    h:add(c.flow, payload(4, 4))
    h:add(c.len, payload(8, 2))
    h:add(c.hops, payload(10, 1))
    -- Flag bit 1: a super-packet, its segment size in an option word after the header.
    local start = 12
    if bit.band(vf, 2) == 2 and payload_len >= 16 then
      h:add(c.segment, payload(12, 2))
      start = 16
    end
    inner(payload(start):tvb(), pinfo, tree)
  elseif kind == 5 and payload_len >= 4 and payload(0, 1):uint() == 1 then
    -- A super-packet behind its shim (segment size in bytes 2-3).
    local h = tree:add(ccn, payload(0, 4), "anyedge super-packet shim")
    h:add(c.segment, payload(2, 2))
    inner(payload(4):tvb(), pinfo, tree)
  elseif kind == 5 then
    inner(payload, pinfo, tree)
  else
    data:call(payload, pinfo, tree)
  end
  return tvb:len()
end

local udp = DissectorTable.get("udp.port")
for _, port in ipairs({ 6081, 6082, 6084, 6090 }) do
  udp:add(port, anyedge)
end
