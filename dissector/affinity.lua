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

local seg_types = {
    [1] = "wildcard affinity",
    [2] = "fixed affinity",
    [3] = "affinity identifier",
    [4] = "service precedence",
    [5] = "backup precedence",
    [6] = "security",
    [7] = "manager interest data",
    [8] = "agent interest data",
    [9] = "identity info",
    [10] = "NAT action",
    [11] = "advertise action",
    [12] = "sequence-number adjust action",
    [13] = "interest criteria action",
    [14] = "action list",
    [15] = "IP packet",
    [16] = "deny reason",
    [17] = "capabilities",
    [18] = "statistics",
}

-- Body lengths of the fixed-size segments (PROTOCOL.md "Segments").
local seg_len = {
    [1] = 32, [2] = 24, [3] = 8, [4] = 4, [5] = 4, [10] = 16, [11] = 12,
    [12] = 16, [13] = 12, [16] = 12, [17] = 12, [18] = 20,
}

local families = { [1] = "IPv4", [2] = "IPv6 (reserved)" }
local auth_algs = { [1] = "keyed MD5", [2] = "HMAC-SHA256" }
local deny_codes = {
    [1] = "unknown required segment",
    [2] = "unsupported required action",
    [3] = "fixed affinity without a supporting wildcard",
    [4] = "table full",
    [5] = "malformed",
}
local ip_protos = { [0] = "any", [1] = "ICMP", [6] = "TCP", [17] = "UDP" }

local f = p.fields
-- Header.
f.version = ProtoField.uint8("affinity.version", "Version")
f.type = ProtoField.uint8("affinity.type", "Message type", base.DEC, msg_types)
f.length = ProtoField.uint16("affinity.length", "Length", base.DEC)
f.family = ProtoField.uint8("affinity.family", "Address family", base.DEC, families)
f.hflags = ProtoField.uint8("affinity.flags", "Flags", base.HEX)
f.hreserved = ProtoField.uint16("affinity.reserved", "Reserved", base.HEX)
f.sequence = ProtoField.uint64("affinity.sequence", "Sequence", base.DEC)
-- Segment header.
f.seg = ProtoField.none("affinity.segment", "Segment")
f.seg_required = ProtoField.bool("affinity.segment.required", "Required", 16, nil, 0x8000)
f.seg_type = ProtoField.uint16("affinity.segment.type", "Segment type", base.DEC, seg_types, 0x7fff)
f.seg_length = ProtoField.uint16("affinity.segment.length", "Segment length", base.DEC)
-- Affinities (wildcard and fixed).
f.proto = ProtoField.uint8("affinity.protocol", "Protocol", base.DEC, ip_protos)
f.dispatch = ProtoField.uint8("affinity.dispatch_flags", "Dispatch flags", base.HEX)
f.dispatch_forward = ProtoField.bool("affinity.dispatch_flags.forward", "FORWARD", 8, nil, 0x01)
f.info = ProtoField.uint8("affinity.info_flags", "Information flags", base.HEX)
f.info_statistics = ProtoField.bool("affinity.info_flags.statistics", "STATISTICS", 8, nil, 0x01)
f.reserved8 = ProtoField.uint8("affinity.reserved8", "Reserved", base.HEX)
f.src = ProtoField.ipv4("affinity.src", "Source address")
f.src_mask = ProtoField.ipv4("affinity.src_mask", "Source mask")
f.dst = ProtoField.ipv4("affinity.dst", "Destination address")
f.dst_mask = ProtoField.ipv4("affinity.dst_mask", "Destination mask")
f.sport = ProtoField.uint16("affinity.src_port", "Source port")
f.dport = ProtoField.uint16("affinity.dst_port", "Destination port")
f.forward = ProtoField.ipv4("affinity.forward", "Forward address")
f.ttl = ProtoField.uint32("affinity.ttl", "Time to live (s)")
-- Affinity identifier.
f.id = ProtoField.uint32("affinity.id", "Affinity identifier")
f.reason = ProtoField.uint16("affinity.reason", "Reason (interest bits)", base.HEX)
f.reserved16 = ProtoField.uint16("affinity.reserved16", "Reserved", base.HEX)
-- Precedences.
f.sp_flags = ProtoField.uint8("affinity.service_precedence.flags", "Flags", base.HEX)
f.sp_search_first = ProtoField.bool("affinity.service_precedence.search_first", "SEARCH-FIRST", 8, nil, 0x01)
f.sp = ProtoField.uint16("affinity.service_precedence", "Service precedence")
f.bp = ProtoField.uint16("affinity.backup_precedence", "Backup precedence")
-- Security.
f.alg = ProtoField.uint8("affinity.security.algorithm", "Algorithm", base.DEC, auth_algs)
f.key_id = ProtoField.uint16("affinity.security.key_id", "Key id")
f.digest = ProtoField.bytes("affinity.security.digest", "Digest")
-- Interest data, identity.
f.mgr_data = ProtoField.bytes("affinity.manager_interest_data", "Manager interest data")
f.agent_data = ProtoField.bytes("affinity.agent_interest_data", "Agent interest data")
f.ident_addr = ProtoField.ipv4("affinity.identity.address", "Address")
f.ident_name = ProtoField.string("affinity.identity.host_name", "Host name", base.UNICODE)
-- NAT action.
f.nat_flags = ProtoField.uint8("affinity.nat.flags", "NAT flags", base.HEX)
f.nat_src = ProtoField.bool("affinity.nat.flags.src", "source address", 8, nil, 0x01)
f.nat_dst = ProtoField.bool("affinity.nat.flags.dst", "destination address", 8, nil, 0x02)
f.nat_sport = ProtoField.bool("affinity.nat.flags.src_port", "source port", 8, nil, 0x04)
f.nat_dport = ProtoField.bool("affinity.nat.flags.dst_port", "destination port", 8, nil, 0x08)
f.reserved24 = ProtoField.uint24("affinity.reserved24", "Reserved", base.HEX)
-- Advertise.
f.adv_flags = ProtoField.uint8("affinity.advertise.flags", "Advertise flags", base.HEX)
f.adv_mask_present = ProtoField.bool("affinity.advertise.flags.mask", "mask present", 8, nil, 0x01)
f.adv_addr = ProtoField.ipv4("affinity.advertise.address", "Address")
f.adv_mask = ProtoField.ipv4("affinity.advertise.mask", "Mask")
-- Sequence adjust.
f.seq_delta = ProtoField.uint32("affinity.seq_adjust.seq_delta", "Sequence delta")
f.seq_init = ProtoField.uint32("affinity.seq_adjust.initial_seq", "Initial sequence")
f.ack_delta = ProtoField.uint32("affinity.seq_adjust.ack_delta", "Acknowledgment delta")
f.ack_init = ProtoField.uint32("affinity.seq_adjust.initial_ack", "Initial acknowledgment")
-- Interest criteria.
f.ic_addr = ProtoField.ipv4("affinity.interest.address", "Interest address")
f.ic_port = ProtoField.uint16("affinity.interest.port", "Interest port")
f.ic_mask = ProtoField.uint16("affinity.interest.mask", "Interest mask", base.HEX)
local mask_bits = {
    { "fin", "FIN", 0x0001 }, { "syn", "SYN", 0x0002 }, { "rst", "RST", 0x0004 },
    { "psh", "PSH", 0x0008 }, { "ack", "ACK", 0x0010 }, { "urg", "URG", 0x0020 },
    { "data", "data present", 0x0040 }, { "first_data", "first data", 0x0080 },
    { "fragment", "IP fragment", 0x0100 }, { "all", "all packets", 0x8000 },
}
for _, b in ipairs(mask_bits) do
    f["ic_mask_" .. b[1]] = ProtoField.bool("affinity.interest.mask." .. b[1], b[2], 16, nil, b[3])
end
f.ic_flags = ProtoField.uint8("affinity.interest.flags", "Interest flags", base.HEX)
f.ic_data = ProtoField.bool("affinity.interest.flags.data", "DATA", 8, nil, 0x01)
f.ic_copy = ProtoField.bool("affinity.interest.flags.copy", "COPY", 8, nil, 0x02)
f.ic_hold = ProtoField.bool("affinity.interest.flags.hold", "HOLD", 8, nil, 0x04)
-- Action list.
f.action = ProtoField.uint16("affinity.action", "Action", base.DEC, seg_types, 0x7fff)
f.action_required = ProtoField.bool("affinity.action.required", "Required", 16, nil, 0x8000)
-- Deny reason.
f.denied_type = ProtoField.uint16("affinity.deny.type", "Denied type", base.DEC)
f.deny_code = ProtoField.uint16("affinity.deny.code", "Code", base.DEC, deny_codes)
f.denied_seq = ProtoField.uint64("affinity.deny.sequence", "Denied sequence")
-- Capabilities.
f.cap_actions = ProtoField.uint32("affinity.capabilities.actions", "Supported actions", base.HEX)
f.cap_nat = ProtoField.bool("affinity.capabilities.actions.nat", "NAT", 32, nil, 0x400)
f.cap_adv = ProtoField.bool("affinity.capabilities.actions.advertise", "advertise", 32, nil, 0x800)
f.cap_seq = ProtoField.bool("affinity.capabilities.actions.seq_adjust", "sequence adjust", 32, nil, 0x1000)
f.cap_ic = ProtoField.bool("affinity.capabilities.actions.interest", "interest criteria", 32, nil, 0x2000)
f.cap_fixed = ProtoField.uint32("affinity.capabilities.fixed_capacity", "Fixed capacity")
f.cap_wild = ProtoField.uint32("affinity.capabilities.wildcard_capacity", "Wildcard capacity")
-- Statistics.
f.st_fwd = ProtoField.ipv4("affinity.statistics.forward", "Forward address")
f.st_pkts = ProtoField.uint64("affinity.statistics.packets", "Packets")
f.st_bytes = ProtoField.uint64("affinity.statistics.bytes", "Bytes")

local e_short = ProtoExpert.new("affinity.short", "Message shorter than its header or length",
    expert.group.MALFORMED, expert.severity.ERROR)
local e_seglen = ProtoExpert.new("affinity.bad_segment_length", "Segment length does not fit its type or message",
    expert.group.MALFORMED, expert.severity.ERROR)
local e_unknown = ProtoExpert.new("affinity.unknown_segment", "Unknown segment type",
    expert.group.UNDECODED, expert.severity.NOTE)
p.experts = { e_short, e_seglen, e_unknown }

local ip_dissector = Dissector.get("ip")

local function affinity_key(t, b, wildcard)
    t:add(f.proto, b(0, 1))
    local d = t:add(f.dispatch, b(1, 1))
    d:add(f.dispatch_forward, b(1, 1))
    local i = t:add(f.info, b(2, 1))
    i:add(f.info_statistics, b(2, 1))
    t:add(f.reserved8, b(3, 1))
    if wildcard then
        t:add(f.src, b(4, 4)); t:add(f.src_mask, b(8, 4))
        t:add(f.dst, b(12, 4)); t:add(f.dst_mask, b(16, 4))
        t:add(f.sport, b(20, 2)); t:add(f.dport, b(22, 2))
        t:add(f.forward, b(24, 4)); t:add(f.ttl, b(28, 4))
        t:append_text(string.format(": %s/%s:%d -> %s/%s:%d ttl %d",
            tostring(b(4, 4):ipv4()), tostring(b(8, 4):ipv4()), b(20, 2):uint(),
            tostring(b(12, 4):ipv4()), tostring(b(16, 4):ipv4()), b(22, 2):uint(), b(28, 4):uint()))
    else
        t:add(f.src, b(4, 4)); t:add(f.dst, b(8, 4))
        t:add(f.sport, b(12, 2)); t:add(f.dport, b(14, 2))
        t:add(f.forward, b(16, 4)); t:add(f.ttl, b(20, 4))
        t:append_text(string.format(": %s:%d -> %s:%d ttl %d",
            tostring(b(4, 4):ipv4()), b(12, 2):uint(),
            tostring(b(8, 4):ipv4()), b(14, 2):uint(), b(20, 4):uint()))
    end
end

-- Decodes one segment body `b` (a TvbRange, length already checked) of
-- type `st` into `t`.
local function segment_body(st, b, t, pinfo, root)
    if st == 1 then affinity_key(t, b, true)
    elseif st == 2 then affinity_key(t, b, false)
    elseif st == 3 then
        t:add(f.id, b(0, 4)); t:add(f.reason, b(4, 2)); t:add(f.reserved16, b(6, 2))
        t:append_text(": " .. b(0, 4):uint())
    elseif st == 4 then
        local fl = t:add(f.sp_flags, b(0, 1))
        fl:add(f.sp_search_first, b(0, 1))
        t:add(f.reserved8, b(1, 1)); t:add(f.sp, b(2, 2))
        t:append_text(": " .. b(2, 2):uint())
    elseif st == 5 then
        t:add(f.bp, b(0, 2)); t:add(f.reserved16, b(2, 2))
        t:append_text(": " .. b(0, 2):uint())
    elseif st == 6 then
        t:add(f.alg, b(0, 1)); t:add(f.reserved8, b(1, 1)); t:add(f.key_id, b(2, 2))
        if b:len() > 4 then t:add(f.digest, b(4, b:len() - 4)) end
    elseif st == 7 then
        if b:len() > 0 then t:add(f.mgr_data, b) end
    elseif st == 8 then
        if b:len() > 0 then t:add(f.agent_data, b) end
    elseif st == 9 then
        t:add(f.ident_addr, b(0, 4))
        if b:len() > 4 then
            t:add(f.ident_name, b(4, b:len() - 4))
            t:append_text(": " .. b(4, b:len() - 4):string())
        end
    elseif st == 10 then
        local fl = t:add(f.nat_flags, b(0, 1))
        fl:add(f.nat_src, b(0, 1)); fl:add(f.nat_dst, b(0, 1))
        fl:add(f.nat_sport, b(0, 1)); fl:add(f.nat_dport, b(0, 1))
        t:add(f.reserved24, b(1, 3))
        t:add(f.src, b(4, 4)); t:add(f.dst, b(8, 4))
        t:add(f.sport, b(12, 2)); t:add(f.dport, b(14, 2))
    elseif st == 11 then
        local fl = t:add(f.adv_flags, b(0, 1))
        fl:add(f.adv_mask_present, b(0, 1))
        t:add(f.reserved24, b(1, 3)); t:add(f.adv_addr, b(4, 4)); t:add(f.adv_mask, b(8, 4))
    elseif st == 12 then
        t:add(f.seq_delta, b(0, 4)); t:add(f.seq_init, b(4, 4))
        t:add(f.ack_delta, b(8, 4)); t:add(f.ack_init, b(12, 4))
    elseif st == 13 then
        t:add(f.ic_addr, b(0, 4)); t:add(f.ic_port, b(4, 2))
        local m = t:add(f.ic_mask, b(6, 2))
        for _, bit in ipairs(mask_bits) do m:add(f["ic_mask_" .. bit[1]], b(6, 2)) end
        local fl = t:add(f.ic_flags, b(8, 1))
        fl:add(f.ic_data, b(8, 1)); fl:add(f.ic_copy, b(8, 1)); fl:add(f.ic_hold, b(8, 1))
        t:add(f.reserved24, b(9, 3))
    elseif st == 14 then
        for o = 0, b:len() - 2, 2 do
            local a = t:add(f.action, b(o, 2))
            a:add(f.action_required, b(o, 2))
        end
    elseif st == 15 then
        if ip_dissector ~= nil then
            ip_dissector:call(b:tvb(), pinfo, root)
        end
        t:append_text(string.format(": %d bytes", b:len()))
    elseif st == 16 then
        t:add(f.denied_type, b(0, 2)); t:add(f.deny_code, b(2, 2)); t:add(f.denied_seq, b(4, 8))
        t:append_text(": " .. (deny_codes[b(2, 2):uint()] or "code " .. b(2, 2):uint()))
    elseif st == 17 then
        local a = t:add(f.cap_actions, b(0, 4))
        a:add(f.cap_nat, b(0, 4)); a:add(f.cap_adv, b(0, 4))
        a:add(f.cap_seq, b(0, 4)); a:add(f.cap_ic, b(0, 4))
        t:add(f.cap_fixed, b(4, 4)); t:add(f.cap_wild, b(8, 4))
    elseif st == 18 then
        t:add(f.st_fwd, b(0, 4)); t:add(f.st_pkts, b(4, 8)); t:add(f.st_bytes, b(12, 8))
    end
end

-- Whether a body of `len` bytes fits segment type `st`.
local function length_ok(st, len)
    if seg_len[st] ~= nil then return len == seg_len[st] end
    if st == 6 then return len == 20 or len == 36 end
    if st == 7 or st == 8 then return len <= 1024 end
    if st == 9 then return len >= 4 and len <= 259 end
    if st == 14 then return len <= 64 and len % 2 == 0 end
    if st == 15 then return len >= 20 end
    return true
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
        t:add(f.length, tvb(off + 2, 2))
        t:add_proto_expert_info(e_short)
        return nil
    end
    local t = tree:add(p, tvb(off, len), "affinity service message: " .. name)
    t:add(f.version, tvb(off, 1))
    t:add(f.type, tvb(off + 1, 1))
    t:add(f.length, tvb(off + 2, 2))
    t:add(f.family, tvb(off + 4, 1))
    t:add(f.hflags, tvb(off + 5, 1))
    t:add(f.hreserved, tvb(off + 6, 2))
    t:add(f.sequence, tvb(off + 8, 8))
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
            local s = t:add(f.seg, tvb(o, stop - o))
            s:set_text("Segment: " .. (seg_types[st] or ("type " .. st)))
            s:add(f.seg_length, tvb(o + 2, 2))
            s:add_proto_expert_info(e_seglen)
            break
        end
        local s = t:add(f.seg, tvb(o, sl))
        s:set_text("Segment: " .. (seg_types[st] or ("type " .. st)))
        s:add(f.seg_required, tvb(o, 2))
        s:add(f.seg_type, tvb(o, 2))
        s:add(f.seg_length, tvb(o + 2, 2))
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
