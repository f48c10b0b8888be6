-- Wireshark/tshark dissector for the affinity service-message protocol,
-- version 1. Every byte is as api/PROTOCOL.md defines it: a datagram holds
-- one message or several back to back (16-byte header, then segments of
-- 4-byte header + body); the IP packet segment is handed to Wireshark's own
-- IP dissector.
--
-- Install: copy to ~/.local/lib/wireshark/plugins/ (or `make install`, into
-- the global Lua plugin folder `tshark -G folders` names). Ports: UDP 1637
-- (agents) and 1638 (managers); "Decode As..." for others.

local p = Proto("affinity", "affinity service message protocol")

local msg_types = {
    [1] = "affinity update-wildcard",
    [2] = "affinity update-fixed",
    [3] = "affinity update-deny",
    [4] = "interest match-wildcard",
    [5] = "interest match-fixed",
    [6] = "IP packet only",
    [16] = "agent hello",
    [17] = "keepalive",
    [18] = "affinity dump request",
    [19] = "statistics report",
}

-- Each segment type once (PROTOCOL.md "Segments"): its name; the body
-- lengths it may have, { least, most, step }; its body's fields in order,
-- { filter name, offset, length } (no length: the rest of the body, shown
-- when not empty; `stride`: the list repeats every so many bytes); and the
-- text its tree line ends with (`summary`, nothing when it gives nil).
local ipv4 = function(b, o) return tostring(b(o, 4):ipv4()) end
local segments = {
    [1] = { name = "wildcard affinity", len = { 32, 32, 1 },
        fields = { { "protocol", 0, 1 }, { "dispatch_flags", 1, 1 }, { "info_flags", 2, 1 },
            { "reserved8", 3, 1 }, { "src", 4, 4 }, { "src_mask", 8, 4 }, { "dst", 12, 4 },
            { "dst_mask", 16, 4 }, { "src_port", 20, 2 }, { "dst_port", 22, 2 },
            { "forward", 24, 4 }, { "ttl", 28, 4 } },
        summary = function(b)
            return string.format(": %s/%s:%d -> %s/%s:%d ttl %d", ipv4(b, 4), ipv4(b, 8),
                b(20, 2):uint(), ipv4(b, 12), ipv4(b, 16), b(22, 2):uint(), b(28, 4):uint())
        end },
    [2] = { name = "fixed affinity", len = { 24, 24, 1 },
        fields = { { "protocol", 0, 1 }, { "dispatch_flags", 1, 1 }, { "info_flags", 2, 1 },
            { "activity_flags", 3, 1 }, { "src", 4, 4 }, { "dst", 8, 4 }, { "src_port", 12, 2 },
            { "dst_port", 14, 2 }, { "forward", 16, 4 }, { "ttl", 20, 4 } },
        summary = function(b)
            return string.format(": %s:%d -> %s:%d ttl %d", ipv4(b, 4), b(12, 2):uint(),
                ipv4(b, 8), b(14, 2):uint(), b(20, 4):uint())
        end },
    [3] = { name = "affinity identifier", len = { 8, 8, 1 },
        fields = { { "id", 0, 4 }, { "reason", 4, 2 }, { "reserved16", 6, 2 } },
        summary = function(b) return ": " .. b(0, 4):uint() end },
    [4] = { name = "service precedence", len = { 4, 4, 1 },
        fields = { { "service_precedence.flags", 0, 1 }, { "reserved8", 1, 1 },
            { "service_precedence", 2, 2 } },
        summary = function(b) return ": " .. b(2, 2):uint() end },
    [5] = { name = "backup precedence", len = { 4, 4, 1 },
        fields = { { "backup_precedence", 0, 2 }, { "reserved16", 2, 2 } },
        summary = function(b) return ": " .. b(0, 2):uint() end },
    -- Keyed MD5 (16-byte digest) or HMAC-SHA256 (32).
    [6] = { name = "security", len = { 20, 36, 16 },
        fields = { { "security.algorithm", 0, 1 }, { "reserved8", 1, 1 },
            { "security.key_id", 2, 2 }, { "security.digest", 4 } } },
    [7] = { name = "manager interest data", len = { 0, 1024, 1 },
        fields = { { "manager_interest_data", 0 } } },
    [8] = { name = "agent interest data", len = { 0, 1024, 1 },
        fields = { { "agent_interest_data", 0 } } },
    -- An address, then a host name of up to 255 bytes.
    [9] = { name = "identity info", len = { 4, 259, 1 },
        fields = { { "identity.address", 0, 4 }, { "identity.host_name", 4 } },
        summary = function(b)
            if b:len() > 4 then return ": " .. b(4, b:len() - 4):string() end
        end },
    [10] = { name = "NAT action", len = { 16, 16, 1 },
        fields = { { "nat.flags", 0, 1 }, { "reserved24", 1, 3 }, { "src", 4, 4 },
            { "dst", 8, 4 }, { "src_port", 12, 2 }, { "dst_port", 14, 2 } } },
    [11] = { name = "advertise action", len = { 12, 12, 1 },
        fields = { { "advertise.flags", 0, 1 }, { "reserved24", 1, 3 },
            { "advertise.address", 4, 4 }, { "advertise.mask", 8, 4 } } },
    [12] = { name = "sequence-number adjust action", len = { 16, 16, 1 },
        fields = { { "seq_adjust.seq_delta", 0, 4 }, { "seq_adjust.initial_seq", 4, 4 },
            { "seq_adjust.ack_delta", 8, 4 }, { "seq_adjust.initial_ack", 12, 4 } } },
    [13] = { name = "interest criteria action", len = { 12, 12, 1 },
        fields = { { "interest.address", 0, 4 }, { "interest.port", 4, 2 },
            { "interest.mask", 6, 2 }, { "interest.flags", 8, 1 }, { "reserved24", 9, 3 } } },
    -- Up to 32 two-byte action types.
    [14] = { name = "action list", len = { 0, 64, 2 },
        fields = { { "action", 0, 2 } }, stride = 2 },
    -- Handed to Wireshark's IP dissector (see segment_body).
    [15] = { name = "IP packet", len = { 20, math.huge, 1 }, fields = {},
        summary = function(b) return string.format(": %d bytes", b:len()) end },
    [16] = { name = "deny reason", len = { 12, 12, 1 },
        fields = { { "deny.type", 0, 2 }, { "deny.code", 2, 2 }, { "deny.sequence", 4, 8 } } },
    [17] = { name = "capabilities", len = { 12, 12, 1 },
        fields = { { "capabilities.actions", 0, 4 }, { "capabilities.fixed_capacity", 4, 4 },
            { "capabilities.wildcard_capacity", 8, 4 } } },
    [18] = { name = "statistics", len = { 20, 20, 1 },
        fields = { { "statistics.forward", 0, 4 }, { "statistics.packets", 4, 8 },
            { "statistics.bytes", 12, 8 } } },
    -- Extension (PROTOCOL.md, "21 — timestamp adjust action").
    [21] = { name = "timestamp adjust action", len = { 8, 8, 1 },
        fields = { { "ts_adjust.delta", 0, 4 }, { "ts_adjust.flags", 4, 1 },
            { "reserved24", 5, 3 } } },
}
local seg_types = {}
for t, s in pairs(segments) do seg_types[t] = s.name end

local families = { [1] = "IPv4", [2] = "IPv6 (reserved)" }
local auth_algs = { [1] = "keyed MD5", [2] = "HMAC-SHA256" }
local deny_codes = {
    [1] = "unknown required segment",
    [2] = "unsupported required action",
    [3] = "fixed affinity without a supporting wildcard",
    [4] = "table full",
    [5] = "malformed",
}
segments[16].summary = function(b)
    return ": " .. (deny_codes[b(2, 2):uint()] or "code " .. b(2, 2):uint())
end
local ip_protos = { [0] = "any", [1] = "ICMP", [6] = "TCP", [17] = "UDP" }

-- Every field once: kind, filter name (after "affinity."), label, then
-- the display base, value names and mask where they apply.
local fields = {
    -- Header.
    { "uint8", "version", "Version" },
    { "uint8", "type", "Message type", base.DEC, msg_types },
    { "uint16", "length", "Length", base.DEC },
    { "uint8", "family", "Address family", base.DEC, families },
    { "uint8", "flags", "Flags", base.HEX },
    { "uint16", "reserved", "Reserved", base.HEX },
    { "uint64", "sequence", "Sequence", base.DEC },
    -- Segment header.
    { "none", "segment", "Segment" },
    { "bool", "segment.required", "Required", 16, nil, 0x8000 },
    { "uint16", "segment.type", "Segment type", base.DEC, seg_types, 0x7fff },
    { "uint16", "segment.length", "Segment length", base.DEC },
    -- Affinities (wildcard and fixed), NAT.
    { "uint8", "protocol", "Protocol", base.DEC, ip_protos },
    { "uint8", "dispatch_flags", "Dispatch flags", base.HEX },
    { "uint8", "info_flags", "Information flags", base.HEX },
    { "uint8", "reserved8", "Reserved", base.HEX },
    { "uint8", "activity_flags", "Activity flags (activity reports)", base.HEX },
    { "ipv4", "src", "Source address" },
    { "ipv4", "src_mask", "Source mask" },
    { "ipv4", "dst", "Destination address" },
    { "ipv4", "dst_mask", "Destination mask" },
    { "uint16", "src_port", "Source port" },
    { "uint16", "dst_port", "Destination port" },
    { "ipv4", "forward", "Forward address" },
    { "uint32", "ttl", "Time to live (s)" },
    -- Affinity identifier, precedences.
    { "uint32", "id", "Affinity identifier" },
    { "uint16", "reason", "Reason (interest bits)", base.HEX },
    { "uint16", "reserved16", "Reserved", base.HEX },
    { "uint8", "service_precedence.flags", "Flags", base.HEX },
    { "uint16", "service_precedence", "Service precedence" },
    { "uint16", "backup_precedence", "Backup precedence" },
    -- Security, interest data, identity.
    { "uint8", "security.algorithm", "Algorithm", base.DEC, auth_algs },
    { "uint16", "security.key_id", "Key id" },
    { "bytes", "security.digest", "Digest" },
    { "bytes", "manager_interest_data", "Manager interest data" },
    { "bytes", "agent_interest_data", "Agent interest data" },
    { "ipv4", "identity.address", "Address" },
    { "string", "identity.host_name", "Host name", base.UNICODE },
    -- Actions.
    { "uint8", "nat.flags", "NAT flags", base.HEX },
    { "uint24", "reserved24", "Reserved", base.HEX },
    { "uint8", "advertise.flags", "Advertise flags", base.HEX },
    { "ipv4", "advertise.address", "Address" },
    { "ipv4", "advertise.mask", "Mask" },
    { "uint32", "seq_adjust.seq_delta", "Sequence delta" },
    { "uint32", "seq_adjust.initial_seq", "Initial sequence" },
    { "uint32", "seq_adjust.ack_delta", "Acknowledgment delta" },
    { "uint32", "seq_adjust.initial_ack", "Initial acknowledgment" },
    { "uint32", "ts_adjust.delta", "Timestamp delta" },
    { "uint8", "ts_adjust.flags", "Timestamp adjust flags", base.HEX },
    { "ipv4", "interest.address", "Interest address" },
    { "uint16", "interest.port", "Interest port" },
    { "uint16", "interest.mask", "Interest mask", base.HEX },
    { "uint8", "interest.flags", "Interest flags", base.HEX },
    { "uint16", "action", "Action", base.DEC, seg_types, 0x7fff },
    -- Deny reason, capabilities, statistics.
    { "uint16", "deny.type", "Denied type", base.DEC },
    { "uint16", "deny.code", "Code", base.DEC, deny_codes },
    { "uint64", "deny.sequence", "Denied sequence" },
    { "uint32", "capabilities.actions", "Supported actions", base.HEX },
    { "uint32", "capabilities.fixed_capacity", "Fixed capacity" },
    { "uint32", "capabilities.wildcard_capacity", "Wildcard capacity" },
    { "ipv4", "statistics.forward", "Forward address" },
    { "uint64", "statistics.packets", "Packets" },
    { "uint64", "statistics.bytes", "Bytes" },
}

-- The bits shown under a flags field, by its filter name: each bit's
-- filter name, label and mask (the width is the flags field's).
local flag_bits = {
    ["dispatch_flags"] = { { "dispatch_flags.forward", "FORWARD", 0x01 } },
    ["info_flags"] = { { "info_flags.statistics", "STATISTICS", 0x01 } },
    ["activity_flags"] = {
        { "activity_flags.handshake_complete", "HANDSHAKE_COMPLETE", 0x01 },
        { "activity_flags.tracked", "TRACKED", 0x02 },
    },
    ["service_precedence.flags"] = {
        { "service_precedence.search_first", "SEARCH-FIRST", 0x01 },
    },
    ["nat.flags"] = {
        { "nat.flags.src", "source address", 0x01 },
        { "nat.flags.dst", "destination address", 0x02 },
        { "nat.flags.src_port", "source port", 0x04 },
        { "nat.flags.dst_port", "destination port", 0x08 },
    },
    ["advertise.flags"] = { { "advertise.flags.mask", "mask present", 0x01 } },
    ["ts_adjust.flags"] = { { "ts_adjust.flags.echo", "ECHO (TSecr)", 0x01 } },
    ["interest.mask"] = {
        { "interest.mask.fin", "FIN", 0x0001 },
        { "interest.mask.syn", "SYN", 0x0002 },
        { "interest.mask.rst", "RST", 0x0004 },
        { "interest.mask.psh", "PSH", 0x0008 },
        { "interest.mask.ack", "ACK", 0x0010 },
        { "interest.mask.urg", "URG", 0x0020 },
        { "interest.mask.data", "data present", 0x0040 },
        { "interest.mask.first_data", "first data", 0x0080 },
        { "interest.mask.fragment", "IP fragment", 0x0100 },
        { "interest.mask.all", "all packets", 0x8000 },
    },
    ["interest.flags"] = {
        { "interest.flags.data", "DATA", 0x01 },
        { "interest.flags.copy", "COPY", 0x02 },
        { "interest.flags.hold", "HOLD", 0x04 },
    },
    ["action"] = { { "action.required", "Required", 0x8000 } },
    ["capabilities.actions"] = {
        { "capabilities.actions.handshake_marks", "HANDSHAKE_MARKS (feature)", 0x1 },
        { "capabilities.actions.nat", "NAT", 0x400 },
        { "capabilities.actions.advertise", "advertise", 0x800 },
        { "capabilities.actions.seq_adjust", "sequence adjust", 0x1000 },
        { "capabilities.actions.interest", "interest criteria", 0x2000 },
    },
}

local f = p.fields
local bits_wide = { uint8 = 8, uint16 = 16, uint32 = 32 }
for _, d in ipairs(fields) do
    local kind, name, label = d[1], d[2], d[3]
    local abbr = "affinity." .. name
    if kind == "ipv4" or kind == "bytes" or kind == "none" then
        f[name] = ProtoField[kind](abbr, label)
    else
        f[name] = ProtoField[kind](abbr, label, d[4], d[5], d[6])
    end
    for _, bit in ipairs(flag_bits[name] or {}) do
        f[bit[1]] = ProtoField.bool("affinity." .. bit[1], bit[2], bits_wide[kind], nil, bit[3])
    end
end

local e_short = ProtoExpert.new("affinity.short", "Message shorter than its header or length",
    expert.group.MALFORMED, expert.severity.ERROR)
local e_seglen = ProtoExpert.new("affinity.bad_segment_length", "Segment length does not fit its type or message",
    expert.group.MALFORMED, expert.severity.ERROR)
local e_unknown = ProtoExpert.new("affinity.unknown_segment", "Unknown segment type",
    expert.group.UNDECODED, expert.severity.NOTE)
p.experts = { e_short, e_seglen, e_unknown }

local ip_dissector = Dissector.get("ip")

-- Decodes one segment body `b` (a TvbRange, length already checked) of
-- type `st` into `t`, as `segments` lays it out.
local function segment_body(st, b, t, pinfo, root)
    local s = segments[st]
    local stride = s.stride or b:len()
    for base_off = 0, b:len() - stride, stride do
        for _, d in ipairs(s.fields) do
            local name, off = d[1], base_off + d[2]
            local len = d[3] or b:len() - off
            if len > 0 then
                local item = t:add(f[name], b(off, len))
                for _, bit in ipairs(flag_bits[name] or {}) do
                    item:add(f[bit[1]], b(off, len))
                end
            end
        end
    end
    if st == 15 and ip_dissector ~= nil then
        ip_dissector:call(b:tvb(), pinfo, root)
    end
    local text = s.summary and s.summary(b)
    if text ~= nil then t:append_text(text) end
end

-- Whether a body of `len` bytes fits segment type `st`.
local function length_ok(st, len)
    local s = segments[st]
    if s == nil then return true end
    local least, most, step = s.len[1], s.len[2], s.len[3]
    return len >= least and len <= most and (len - least) % step == 0
end

-- Dissects the message at `off`; returns its length, or nil when the rest
-- of the datagram cannot be a message.
local function message(tvb, off, pinfo, tree, root)
    local left = tvb:len() - off
    if left < 16 then
        local t = tree:add(p, tvb(off, left), "affinity service message (truncated)")
        t:add_proto_expert_info(e_short)
        return nil
    end
    local len = tvb(off + 2, 2):uint()
    local mt = tvb(off + 1, 1):uint()
    local name = msg_types[mt] or ("type " .. mt)
    if len < 16 or len > left then
        local t = tree:add(p, tvb(off, left), "affinity service message: " .. name)
        t:add(f["length"], tvb(off + 2, 2))
        t:add_proto_expert_info(e_short)
        return nil
    end
    local t = tree:add(p, tvb(off, len), "affinity service message: " .. name)
    t:add(f["version"], tvb(off, 1))
    t:add(f["type"], tvb(off + 1, 1))
    t:add(f["length"], tvb(off + 2, 2))
    t:add(f["family"], tvb(off + 4, 1))
    t:add(f["flags"], tvb(off + 5, 1))
    t:add(f["reserved"], tvb(off + 6, 2))
    t:add(f["sequence"], tvb(off + 8, 8))
    local o, stop = off + 16, off + len
    while o < stop do
        if stop - o < 4 then
            t:add_proto_expert_info(e_seglen)
            break
        end
        local raw = tvb(o, 2):uint()
        local st = bit.band(raw, 0x7fff)
        local sl = tvb(o + 2, 2):uint()
        if sl < 4 or o + sl > stop then
            local s = t:add(f["segment"], tvb(o, stop - o))
            s:set_text("Segment: " .. (seg_types[st] or ("type " .. st)))
            s:add(f["segment.length"], tvb(o + 2, 2))
            s:add_proto_expert_info(e_seglen)
            break
        end
        local s = t:add(f["segment"], tvb(o, sl))
        s:set_text("Segment: " .. (seg_types[st] or ("type " .. st)))
        s:add(f["segment.required"], tvb(o, 2))
        s:add(f["segment.type"], tvb(o, 2))
        s:add(f["segment.length"], tvb(o + 2, 2))
        local body = sl - 4
        if seg_types[st] == nil then
            s:add_proto_expert_info(e_unknown)
        elseif not length_ok(st, body) then
            s:add_proto_expert_info(e_seglen)
        elseif body > 0 then
            segment_body(st, tvb(o + 4, body), s, pinfo, root)
        elseif st == 15 then
            s:add_proto_expert_info(e_seglen)
        end
        o = o + sl
    end
    return len, name
end

function p.dissector(tvb, pinfo, tree)
    if tvb:len() < 16 or tvb(0, 1):uint() ~= 1 then return 0 end
    local names = {}
    local off = 0
    while off < tvb:len() do
        local len, name = message(tvb, off, pinfo, tree, tree)
        if len == nil then break end
        names[#names + 1] = name
        off = off + len
    end
    -- After the embedded IP packet's dissectors, which set the columns too.
    pinfo.cols.protocol:set("AFFINITY")
    pinfo.cols.info:set(table.concat(names, ", "))
    return tvb:len()
end

local udp = DissectorTable.get("udp.port")
udp:add(1637, p)
udp:add(1638, p)
