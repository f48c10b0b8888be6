//! SYN proxy, the parts that do not touch a worker: SYN cookies, the TCP
//! options a SYN offers, the SYN-ACK the agent answers with, the state a
//! proved cookie ACK hands the manager (and the manager echoes back), and
//! the SYN the agent sends the backend.
//!
//! Where it comes from: RFC 4987 section 3.6 (SYN cookies) and Linux
//! netfilter's SYNPROXY target (`net/netfilter/nf_synproxy_core.c`,
//! `net/ipv4/syncookies.c`): the MSS is an index into a small table kept in
//! the cookie, and when the client sent timestamps, the window scale and
//! SACK-permitted it offered ride in the low bits of the SYN-ACK's TSval,
//! which the client echoes in its ACK's TSecr (`cookie_init_timestamp`,
//! `cookie_timestamp_decode`). Layout of the cookie and the wire format of
//! the state: PROTOCOL.md, "20 — admission action".

use crate::wire::{self, checksum, get_u16, get_u32, ipv4, set_u16, set_u32, shifted, tcp};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::Ipv4Addr;
use subtle::ConstantTimeEq;

/// How long one cookie secret generation lasts, nanoseconds (64 s). A
/// cookie is accepted in its generation and the next one: 64–128 s, about
/// Linux's two-minute cookie lifetime (`MAX_SYNCOOKIE_AGE`).
pub const GENERATION_NS: u64 = 64_000_000_000;

/// MSS values a cookie can carry (bits 2–0 index this table); the SYN-ACK
/// and the backend SYN use the largest not above the client's (536, the
/// RFC 9293 default, when it sent none).
pub const MSS_TABLE: [u16; 8] = [536, 1220, 1300, 1360, 1400, 1440, 1460, 8960];

/// Window scale the agent offers the client in its SYN-ACK: the backend must
/// use the same (like SYNPROXY's `--wscale`), since the agent does not
/// rescale windows after the splice.
pub const ADVERTISED_WSCALE: u8 = 7;

/// Cookie bits carrying the MAC (31–4).
const MAC_BITS: u32 = 0xFFFF_FFF0;
/// Cookie bit carrying the generation's parity.
const GEN_BIT: u32 = 1 << 3;
/// TSval bits carrying the client's options (bits 0–3 window scale, 15 =
/// none; bit 4 SACK-permitted).
const TS_OPT_BITS: u32 = 0x1F;
const TS_NO_WSCALE: u32 = 0xF;
const TS_SACK: u32 = 1 << 4;

/// TCP option kinds (RFC 9293, RFC 7323, RFC 2018).
mod opt {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WSCALE: u8 = 3;
    pub const SACK_PERM: u8 = 4;
    pub const TIMESTAMP: u8 = 8;
}

/// The options a SYN (or an ACK, for its timestamps) carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpOptions {
    /// Maximum segment size, bytes.
    pub mss: Option<u16>,
    /// Window scale shift (RFC 7323), at most 14.
    pub wscale: Option<u8>,
    /// SACK-permitted (RFC 2018) offered.
    pub sack_permitted: bool,
    /// (TSval, TSecr), as on the wire (units of the sender's clock).
    pub timestamps: Option<(u32, u32)>,
}

impl TcpOptions {
    /// Reads the options area of a TCP header (after its 20 fixed bytes);
    /// a malformed option ends the walk (what was read so far stands).
    pub fn parse(mut o: &[u8]) -> Self {
        let mut t = TcpOptions::default();
        while let Some(&kind) = o.first() {
            match kind {
                opt::END => break,
                opt::NOP => {
                    o = &o[1..];
                    continue;
                }
                _ => {}
            }
            let Some(&len) = o.get(1) else { break };
            let len = len as usize;
            if len < 2 || len > o.len() {
                break;
            }
            let body = &o[2..len];
            match (kind, body.len()) {
                (opt::MSS, 2) => t.mss = Some(u16::from_be_bytes([body[0], body[1]])),
                (opt::WSCALE, 1) => t.wscale = Some(body[0].min(14)),
                (opt::SACK_PERM, 0) => t.sack_permitted = true,
                (opt::TIMESTAMP, 8) => {
                    t.timestamps = Some((get_u32(body, 0..4), get_u32(body, 4..8)));
                }
                _ => {}
            }
            o = &o[len..];
        }
        t
    }

    /// Writes the options as a SYN or SYN-ACK carries them into `out`,
    /// padded with NOPs to a multiple of 4; the bytes written. The packing
    /// (MSS 4, SACK-permitted with timestamps 12, either alone 4 or 12,
    /// window scale 4) never takes more room than the client's own SYN used
    /// for the same options, so an answer fits in the SYN's buffer.
    pub fn emit(&self, out: &mut [u8; 20]) -> usize {
        let mut n = 0;
        let mut put = |b: &[u8]| {
            out[n..n + b.len()].copy_from_slice(b);
            n += b.len();
        };
        if let Some(m) = self.mss {
            put(&[opt::MSS, 4]);
            put(&m.to_be_bytes());
        }
        match (self.sack_permitted, self.timestamps) {
            (sack, Some((val, ecr))) => {
                if sack {
                    put(&[opt::SACK_PERM, 2, opt::TIMESTAMP, 10]);
                } else {
                    put(&[opt::NOP, opt::NOP, opt::TIMESTAMP, 10]);
                }
                put(&val.to_be_bytes());
                put(&ecr.to_be_bytes());
            }
            (true, None) => put(&[opt::NOP, opt::NOP, opt::SACK_PERM, 2]),
            (false, None) => {}
        }
        if let Some(w) = self.wscale {
            put(&[opt::NOP, opt::WSCALE, 3, w]);
        }
        n
    }
}

/// The MSS table index for a client MSS: the largest entry not above it.
pub fn mss_index(mss: u16) -> u32 {
    MSS_TABLE.iter().rposition(|&m| m <= mss).unwrap_or(0) as u32
}

/// A fresh 32-byte master secret from the operating system (the cookie
/// secrets of each generation are derived from it).
pub fn random_secret() -> [u8; 32] {
    let mut s = [0u8; 32];
    if getrandom::fill(&mut s).is_err() {
        // No OS randomness: fall back to std's per-process random SipHash
        // keys (still unknown to a remote sender).
        use std::hash::{BuildHasher, Hasher};
        for (i, c) in s.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            c.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    s
}

/// A worker's cookie maker and checker: the master secret and the keyed
/// MACs of the last two generations used (derived once per generation,
/// HMAC-SHA-256(master, label ‖ generation), so the secret in use rotates
/// every [`GENERATION_NS`] and one generation's key tells nothing of
/// another's).
pub struct SynCookies {
    master: [u8; 32],
    keys: [Option<(u64, Hmac<Sha256>)>; 2],
}

/// A cookie's inputs besides the secret.
#[derive(Debug, Clone, Copy)]
pub struct CookieInput {
    /// The client's address and port (the SYN's source).
    pub src: Ipv4Addr,
    /// The VIP and port (the SYN's destination).
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    /// The client's initial sequence number.
    pub client_isn: u32,
}

impl SynCookies {
    /// A cookie maker over `master` (32 bytes, [`random_secret`]).
    pub fn new(master: [u8; 32]) -> Self {
        SynCookies {
            master,
            keys: [None, None],
        }
    }

    fn key(&mut self, generation: u64) -> Hmac<Sha256> {
        let slot = (generation & 1) as usize;
        match &self.keys[slot] {
            Some((g, k)) if *g == generation => k.clone(),
            _ => {
                // HMAC takes keys of any length: `new_from_slice` cannot fail.
                let mut d = <Hmac<Sha256> as Mac>::new_from_slice(&self.master)
                    .unwrap_or_else(|_| unreachable!());
                d.update(b"affinity syn cookie generation");
                d.update(&generation.to_be_bytes());
                let secret = d.finalize().into_bytes();
                let k = <Hmac<Sha256> as Mac>::new_from_slice(&secret)
                    .unwrap_or_else(|_| unreachable!());
                self.keys[slot] = Some((generation, k.clone()));
                k
            }
        }
    }

    fn mac(&mut self, generation: u64, c: &CookieInput, mss_idx: u32) -> u32 {
        let mut m = self.key(generation);
        m.update(&c.src.octets());
        m.update(&c.dst.octets());
        m.update(&c.sport.to_be_bytes());
        m.update(&c.dport.to_be_bytes());
        m.update(&c.client_isn.to_be_bytes());
        m.update(&[mss_idx as u8]);
        let out = m.finalize().into_bytes();
        u32::from_be_bytes([out[0], out[1], out[2], out[3]])
    }

    /// The cookie (the SYN-ACK's sequence number) for a SYN at `now_ns`
    /// whose client offered MSS table entry `mss_idx` (0–7).
    pub fn make(&mut self, now_ns: u64, c: &CookieInput, mss_idx: u32) -> u32 {
        let g = now_ns / GENERATION_NS;
        let mss_idx = mss_idx & 7;
        (self.mac(g, c, mss_idx) & MAC_BITS) | ((g as u32 & 1) << 3) | mss_idx
    }

    /// Checks `cookie` (an ACK's acknowledgment number minus one) against
    /// the current and the previous generation, comparing the MAC in
    /// constant time; the MSS table index it carries when valid.
    pub fn check(&mut self, now_ns: u64, c: &CookieInput, cookie: u32) -> Option<u32> {
        let now_g = now_ns / GENERATION_NS;
        let parity = (cookie & GEN_BIT != 0) as u64;
        // The parity names the generation: now, or the one before.
        let g = if now_g & 1 == parity {
            now_g
        } else {
            now_g.checked_sub(1)?
        };
        let mss_idx = cookie & 7;
        let want = self.mac(g, c, mss_idx) & MAC_BITS;
        let ok: bool = (cookie & MAC_BITS).ct_eq(&want).into();
        ok.then_some(mss_idx)
    }
}

/// The client's half of a proxied connection, as a proved cookie ACK shows
/// it: what the agent needs to open the backend connection with the
/// client's original options and to join the two halves. Carried after the
/// agent's 16 interest-data bytes (20 bytes, network order; PROTOCOL.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SynProxyState {
    /// The client's initial sequence number.
    pub client_isn: u32,
    /// The agent's (cookie) initial sequence number toward the client.
    pub cookie_isn: u32,
    /// MSS the client offered (as kept in the cookie), bytes.
    pub mss: u16,
    /// The client's window scale, if it offered one (known only with timestamps).
    pub wscale: Option<u8>,
    /// The client offered SACK-permitted (known only with timestamps).
    pub sack_permitted: bool,
    /// The client's timestamps from its ACK (TSval, TSecr), if it uses them.
    pub timestamps: Option<(u32, u32)>,
}

impl SynProxyState {
    /// Encoded length, bytes.
    pub const LEN: usize = 20;

    /// The 20 bytes: client ISN, cookie ISN (u32 each), MSS (u16), window
    /// scale (u8, 255 = none), flags (bit 0 SACK-permitted, bit 1
    /// timestamps present), TSval, TSecr (u32 each); network order.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        set_u32(&mut b, 0..4, self.client_isn);
        set_u32(&mut b, 4..8, self.cookie_isn);
        set_u16(&mut b, 8..10, self.mss);
        b[10] = self.wscale.unwrap_or(u8::MAX);
        // Bit 0 SACK-permitted, bit 1 timestamps present.
        b[11] = self.sack_permitted as u8 | (self.timestamps.is_some() as u8) << 1;
        let (val, ecr) = self.timestamps.unwrap_or_default();
        set_u32(&mut b, 12..16, val);
        set_u32(&mut b, 16..20, ecr);
        b
    }

    /// Reads the 20 bytes back; `None` when `b` is not 20 bytes long.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; Self::LEN] = b.try_into().ok()?;
        Some(SynProxyState {
            client_isn: get_u32(b, 0..4),
            cookie_isn: get_u32(b, 4..8),
            mss: get_u16(b, 8..10),
            wscale: (b[10] != u8::MAX).then_some(b[10]),
            sack_permitted: b[11] & 1 != 0,
            timestamps: (b[11] & 2 != 0).then_some((get_u32(b, 12..16), get_u32(b, 16..20))),
        })
    }
}

/// The header fields of a TCP segment the agent writes itself (host
/// order; `flags` are TCP flag bits).
#[derive(Clone, Copy)]
struct Segment {
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
}

/// Fills in the IPv4 header (20 bytes, DF, TTL 64, no options) and the
/// TCP header of `pkt[..40 + options.len()]`, both checksums computed in
/// full; the packet's length.
fn write_tcp(pkt: &mut [u8], seg: &Segment, options: &[u8]) -> usize {
    let Segment {
        src,
        sport,
        dst,
        dport,
        flags,
        seq,
        ack,
    } = *seg;
    let ip = ipv4::HEADER_LEN;
    let thl = tcp::HEADER_LEN + options.len();
    let total = ip + thl;
    pkt[..total].fill(0);
    pkt[ipv4::field::VER_IHL] = ipv4::ver_ihl(ip);
    set_u16(pkt, ipv4::field::LENGTH, total as u16);
    set_u16(pkt, ipv4::field::FLG_OFF, ipv4::flags::DF);
    pkt[ipv4::field::TTL] = ipv4::DEFAULT_TTL;
    pkt[ipv4::field::PROTOCOL] = wire::TCP;
    pkt[ipv4::field::SRC_ADDR].copy_from_slice(&src.octets());
    pkt[ipv4::field::DST_ADDR].copy_from_slice(&dst.octets());
    let c = checksum::ipv4_header_checksum(&pkt[..ip]);
    set_u16(pkt, ipv4::field::CHECKSUM, c);
    let l4 = &mut pkt[ip..total];
    set_u16(l4, tcp::field::SRC_PORT, sport);
    set_u16(l4, tcp::field::DST_PORT, dport);
    set_u32(l4, tcp::field::SEQ_NUM, seq);
    set_u32(l4, tcp::field::ACK_NUM, ack);
    l4[tcp::field::DATA_OFF] = tcp::data_off(thl);
    l4[tcp::field::FLAGS] = flags;
    set_u16(l4, tcp::field::WIN_SIZE, u16::MAX);
    l4[tcp::HEADER_LEN..].copy_from_slice(options);
    if let Ok(info) = wire::parse_ipv4(&pkt[..total]) {
        if let Some(c) = checksum::l4_checksum(&pkt[..total], &info) {
            set_u16(pkt, shifted(tcp::field::CHECKSUM, ip), c);
        }
    }
    total
}

/// Turns the client's SYN in `pkt` (described by `info`) into the agent's
/// SYN-ACK in place: addresses and ports swapped, the cookie as sequence
/// number, the client's ISN + 1 acknowledged, the options the client offered
/// answered (MSS from the table, SACK-permitted, window scale
/// [`ADVERTISED_WSCALE`], timestamps with the client's window scale and
/// SACK-permitted in the TSval's low bits). The SYN-ACK's length, never more
/// than the SYN's; `None` when the SYN's TCP header cannot be read.
pub fn answer_syn(
    pkt: &mut [u8],
    info: &wire::PacketInfo,
    cookies: &mut SynCookies,
    now_ns: u64,
) -> Option<usize> {
    let l4 = pkt.get(info.l4_offset..info.total_len)?;
    let doff = tcp::header_len(*l4.get(tcp::field::DATA_OFF)?);
    let offered = TcpOptions::parse(l4.get(tcp::HEADER_LEN..doff)?);
    let client_isn = get_u32(l4, tcp::field::SEQ_NUM);
    let k = info.key;
    let mss_idx = mss_index(offered.mss.unwrap_or(MSS_TABLE[0]));
    let input = CookieInput {
        src: k.src_addr,
        dst: k.dst_addr,
        sport: k.src_port,
        dport: k.dst_port,
        client_isn,
    };
    let cookie = cookies.make(now_ns, &input, mss_idx);
    let ts = offered.timestamps.map(|(val, _)| {
        let ws = offered.wscale.map_or(TS_NO_WSCALE, u32::from);
        let sack = if offered.sack_permitted { TS_SACK } else { 0 };
        let ms = (now_ns / 1_000_000) as u32;
        ((ms & !TS_OPT_BITS) | ws | sack, val)
    });
    let answer = TcpOptions {
        mss: offered.mss.map(|_| MSS_TABLE[mss_idx as usize]),
        wscale: offered.wscale.map(|_| ADVERTISED_WSCALE),
        sack_permitted: offered.sack_permitted,
        timestamps: ts,
    };
    let mut o = [0u8; 20];
    let n = answer.emit(&mut o);
    if ipv4::HEADER_LEN + tcp::HEADER_LEN + n > info.total_len {
        return None;
    }
    let flags = tcp::flags::SYN | tcp::flags::ACK;
    let (ack, sport, dport) = (client_isn.wrapping_add(1), k.dst_port, k.src_port);
    let seg = Segment {
        src: k.dst_addr,
        sport,
        dst: k.src_addr,
        dport,
        flags,
        seq: cookie,
        ack,
    };
    Some(write_tcp(pkt, &seg, &o[..n]))
}

/// Checks the client's ACK in `pkt`: a valid cookie gives the proxied
/// connection's state (the options decoded from the cookie and, with
/// timestamps, from the TSecr). Data may ride on it, as SYNPROXY accepts:
/// when the pure ACK is lost, the client's data is all that comes (a second
/// proof of a connection already proved is settled in the control path,
/// `Agent::syn_proxy_update`).
pub fn prove_ack(
    pkt: &[u8],
    info: &wire::PacketInfo,
    cookies: &mut SynCookies,
    now_ns: u64,
) -> Option<SynProxyState> {
    let l4 = pkt.get(info.l4_offset..info.total_len)?;
    let doff = tcp::header_len(*l4.get(tcp::field::DATA_OFF)?);
    let seq = get_u32(l4, tcp::field::SEQ_NUM);
    let cookie = get_u32(l4, tcp::field::ACK_NUM).wrapping_sub(1);
    let k = info.key;
    let input = CookieInput {
        src: k.src_addr,
        dst: k.dst_addr,
        sport: k.src_port,
        dport: k.dst_port,
        client_isn: seq.wrapping_sub(1),
    };
    let mss_idx = cookies.check(now_ns, &input, cookie)?;
    let opts = TcpOptions::parse(l4.get(tcp::HEADER_LEN..doff)?);
    let (wscale, sack) = match opts.timestamps {
        Some((_, ecr)) => {
            let ws = ecr & TS_NO_WSCALE;
            (
                (ws != TS_NO_WSCALE).then_some(ws.min(14) as u8),
                ecr & TS_SACK != 0,
            )
        }
        None => (None, false),
    };
    Some(SynProxyState {
        client_isn: input.client_isn,
        cookie_isn: cookie,
        mss: MSS_TABLE[mss_idx as usize],
        wscale,
        sack_permitted: sack,
        timestamps: opts.timestamps,
    })
}

/// The SYN the agent sends toward the backend for a proxied flow `key`
/// (client → VIP, before NAT: the flow's fixed affinity rewrites it): the
/// client's ISN and the client's original options (MSS, window scale,
/// SACK-permitted, its current TSval).
pub fn backend_syn(key: &affinity_api::AffinityKey, s: &SynProxyState) -> Vec<u8> {
    let opts = TcpOptions {
        mss: Some(s.mss),
        wscale: s.wscale,
        sack_permitted: s.sack_permitted,
        timestamps: s.timestamps.map(|(val, _)| (val, 0)),
    };
    let mut o = [0u8; 20];
    let n = opts.emit(&mut o);
    let mut pkt = vec![0u8; ipv4::HEADER_LEN + tcp::HEADER_LEN + n];
    let seg = Segment {
        src: key.src_addr,
        sport: key.src_port,
        dst: key.dst_addr,
        dport: key.dst_port,
        flags: tcp::flags::SYN,
        seq: s.client_isn,
        ack: 0,
    };
    write_tcp(&mut pkt, &seg, &o[..n]);
    pkt
}

mod splice;
pub use splice::{
    apply_ts_adjust, splice_adjusts, tsval, Early, Installed, Pending, Proving, SpliceTable,
    EARLY_DATA_BYTES, EARLY_DATA_PACKETS, EARLY_DATA_TOTAL_BYTES, PENDING_NS, REFUSED_NS,
    REPROVE_NS,
};

#[cfg(test)]
mod tests;
