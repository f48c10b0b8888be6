//! Message builders: the service messages the manager sends (wildcard
//! updates, fixed-affinity installs, renewals and deletions), each signed
//! when a sending key is configured and carrying the manager's identity.
//! Layouts and exchanges: `api/EXCHANGES.md`.

use super::flows::Flow;
use super::services::Service;
use crate::config::Config;
use affinity_api::{
    encode_action_list, interest, seg, ActionList, AdmissionAction, AdvertiseAction,
    AffinityIdentifier, AffinityKey, AuthPolicy, BackupPrecedence, FixedAffinity, IdentityInfo,
    InterestCriteria, Key, MessageBuilder, MessageType, NatAction, Receiver, Segment,
    SequenceSource, ServicePrecedence, WildcardAffinity,
};
use std::net::{Ipv4Addr, SocketAddrV4};

/// Flows per renewal message (two affinities each) to stay under ~1400 bytes.
pub(super) const FLOWS_PER_MESSAGE: usize = 8;

/// Splits `keys` (flows' forward keys) into renewal messages of at most
/// [`FLOWS_PER_MESSAGE`] flows' worth of bytes: a flow counts 2 (its two
/// affinities with NAT and tracking, 128 bytes), a spliced SYN-proxied one
/// (`spliced`) 3 (64 bytes of sequence and timestamp adjusts more), so a
/// renewal of spliced flows stays under ~1400 bytes too.
pub(super) fn renewal_chunks(
    keys: &[AffinityKey],
    spliced: impl Fn(&AffinityKey) -> bool,
) -> Vec<&[AffinityKey]> {
    let budget = 2 * FLOWS_PER_MESSAGE;
    let mut chunks = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, k) in keys.iter().enumerate() {
        let cost = if spliced(k) { 3 } else { 2 };
        if used + cost > budget {
            chunks.push(&keys[start..i]);
            (start, used) = (i, 0);
        }
        used += cost;
    }
    if start < keys.len() {
        chunks.push(&keys[start..]);
    }
    chunks
}

/// The sending side: sequence numbers, the signing key and the identity
/// every message carries.
pub struct Messages {
    seq: SequenceSource,
    /// The configured sending key; unsigned messages without one.
    signing: Option<Key>,
    /// Where agents send interest matches (the manager's listen address).
    listen: SocketAddrV4,
    /// Host name in identity info.
    name: String,
}

impl Messages {
    /// Sequence numbers start from the system clock (so a restarted manager
    /// stays ahead of agents' replay windows).
    pub fn new(cfg: &Config, auth: &AuthPolicy) -> Self {
        Messages {
            seq: SequenceSource::from_system_clock(),
            signing: auth.keys.signing_key().cloned(),
            listen: cfg.manager.listen,
            name: cfg.manager.name.clone(),
        }
    }

    /// An agent said our sequence is behind its replay window
    /// (`DenyReason::STALE_SEQUENCE` naming `highest`): continue above it.
    pub fn resynchronise(&mut self, highest: u64) {
        self.seq.advance_past(highest);
    }

    /// Takes a reloaded configuration's identity and key; the sequence
    /// continues.
    pub fn reconfigure(&mut self, cfg: &Config, auth: &AuthPolicy) {
        self.signing = auth.keys.signing_key().cloned();
        self.listen = cfg.manager.listen;
        self.name = cfg.manager.name.clone();
    }

    /// A message of type `t` with the next sequence number and identity info.
    fn builder(&mut self, t: MessageType) -> MessageBuilder {
        let seq = self.seq.next();
        let mut b = match &self.signing {
            Some(k) => MessageBuilder::signed(t, seq, k),
            None => MessageBuilder::new(t, seq),
        };
        b.push(Segment::IdentityInfo(IdentityInfo {
            address: *self.listen.ip(),
            host_name: &self.name,
        }));
        b
    }

    /// [`Self::builder`] for a message meant for one agent: it names the
    /// agent in a receiver segment (covered by the digest), so the signed
    /// message cannot be replayed to another agent (PROTOCOL.md, "Security").
    fn builder_to(&mut self, t: MessageType, to: Ipv4Addr) -> MessageBuilder {
        let mut b = self.builder(t);
        b.push(Segment::Receiver(Receiver { address: to }));
        b
    }

    /// Interest criteria sending matches to this manager.
    fn interest(&self, mask: u16, flags: u8) -> InterestCriteria {
        InterestCriteria {
            address: *self.listen.ip(),
            port: self.listen.port(),
            mask,
            flags,
        }
    }

    /// Copies of SYN, FIN and RST on a flow's forward fixed affinity
    /// (close tracking, and reopening of a closed 5-tuple by a new SYN);
    /// the reverse one drops SYN (a backend's SYN-ACK tells nothing).
    /// Cost: the SYN returned with a new flow's install is copied back
    /// once (the agent copies returned packets too).
    fn tracking(&self) -> InterestCriteria {
        self.interest(
            interest::SYN | interest::FIN | interest::RST,
            InterestCriteria::COPY,
        )
    }

    /// One wildcard update per service (forward + one reverse per backend),
    /// with time to live `ttl` (s; 0 deletes).
    pub fn wildcards(&mut self, services: &[Service], ttl: u32) -> Vec<Vec<u8>> {
        let mut msgs = Vec::new();
        for s in services {
            if let Some(m) = self.wildcard(s, ttl) {
                msgs.push(m);
            }
        }
        msgs
    }

    fn wildcard(&mut self, s: &Service, ttl: u32) -> Option<Vec<u8>> {
        let proto = s.cfg.protocol_number();
        let domain = s.domain;
        let vip = s.cfg.virtual_addr;
        let sp = ServicePrecedence {
            search_first: false,
            value: s.cfg.service_precedence,
        };
        let bp = BackupPrecedence {
            value: s.cfg.backup_precedence,
        };
        let punt = self.interest(interest::ALL, InterestCriteria::DATA);
        let advertise = s.advertise;
        let (dst_rev, dst_rev_mask) = match &s.cfg.snat {
            Some(n) => (n.address, Ipv4Addr::BROADCAST),
            None => domain,
        };
        let id_base = s.id_base;
        // Every action the service needs from an agent, marked required
        // (seed FIG 8B): an agent that cannot perform one denies the
        // wildcard instead of attracting flows it cannot translate.
        let required: Vec<(u16, bool)> = needed_actions(s).iter().map(|&t| (t, true)).collect();
        let list = encode_action_list(&required);
        let rev_list = encode_action_list(&[
            (seg::INTEREST_CRITERIA_ACTION, true),
            (seg::NAT_ACTION, true),
        ]);
        let mut b = self.builder(MessageType::AffinityUpdateWildcard);
        b.push(Segment::ServicePrecedence(sp));
        b.push(Segment::BackupPrecedence(bp));
        b.push(Segment::InterestCriteria(punt));
        b.push(Segment::WildcardAffinity(WildcardAffinity {
            key: AffinityKey {
                protocol: proto,
                src_addr: domain.0,
                dst_addr: *vip.ip(),
                src_port: 0,
                dst_port: vip.port(),
            },
            src_mask: domain.1,
            dst_mask: Ipv4Addr::BROADCAST,
            dispatch_flags: 0,
            info_flags: 0,
            forward_addr: Ipv4Addr::UNSPECIFIED,
            ttl,
        }));
        b.push(Segment::AffinityIdentifier(AffinityIdentifier {
            id: id_base,
            reason: 0,
        }));
        // Optional: an agent that does not know it punts SYNs as before.
        if s.cfg.syn_proxy && proto == 6 {
            b.push(Segment::AdmissionAction(AdmissionAction {
                flags: AdmissionAction::SYN_PROXY,
                ..AdmissionAction::default()
            }));
        }
        b.push(Segment::ActionList(ActionList::from_raw(&list).unwrap_or(
            ActionList::from_raw(&[]).expect("empty list is valid"),
        )));
        if advertise {
            b.push(Segment::AdvertiseAction(AdvertiseAction {
                address: *vip.ip(),
                mask: None,
            }));
        }
        for (i, be) in s.backends.iter().enumerate() {
            b.push(Segment::WildcardAffinity(WildcardAffinity {
                key: AffinityKey {
                    protocol: proto,
                    src_addr: *be.addr.ip(),
                    dst_addr: dst_rev,
                    src_port: be.addr.port(),
                    dst_port: 0,
                },
                src_mask: Ipv4Addr::BROADCAST,
                dst_mask: dst_rev_mask,
                dispatch_flags: 0,
                info_flags: 0,
                forward_addr: Ipv4Addr::UNSPECIFIED,
                ttl,
            }));
            b.push(Segment::AffinityIdentifier(AffinityIdentifier {
                id: id_base + 1 + i as u32,
                reason: 0,
            }));
            if let Some(l) = ActionList::from_raw(&rev_list) {
                b.push(Segment::ActionList(l));
            }
        }
        b.finish().ok()
    }

    /// A flow's two fixed affinities with time to live `ttl` (s; 0
    /// deletes) for the agent at `to`, echoing the agent's interest data
    /// and returning the punted packet when given.
    pub fn flow(
        &mut self,
        to: Ipv4Addr,
        f: &Flow,
        ttl: u32,
        echo: Option<&[u8]>,
        packet: Option<&[u8]>,
    ) -> Option<Vec<u8>> {
        let tracking = self.tracking();
        let mut b = self.builder_to(MessageType::AffinityUpdateFixed, to);
        if let Some(e) = echo {
            b.push(Segment::FaInterestData(e));
        }
        push_flow(&mut b, f, ttl, tracking);
        if let Some(p) = packet {
            b.push(Segment::IpPacket(p));
        }
        b.finish().ok()
    }

    /// One renewal of `flows` (at most `FLOWS_PER_MESSAGE` keep a
    /// message under ~1400 bytes) with time to live `ttl` (s), for the
    /// agent at `to`.
    pub fn renewal<'f>(
        &mut self,
        to: Ipv4Addr,
        flows: impl IntoIterator<Item = &'f Flow>,
        ttl: u32,
    ) -> Option<Vec<u8>> {
        let tracking = self.tracking();
        let mut b = self.builder_to(MessageType::AffinityUpdateFixed, to);
        for f in flows {
            push_flow(&mut b, f, ttl, tracking);
        }
        b.finish().ok()
    }
}

/// The action segment types a service needs an agent to perform (its
/// forward wildcard's action list): interest criteria (punts and close
/// tracking), NAT (every flow is translated both ways) and, while the
/// service advertises its virtual address, advertise.
pub fn needed_actions(s: &Service) -> Vec<u16> {
    let mut v = vec![seg::INTEREST_CRITERIA_ACTION, seg::NAT_ACTION];
    if s.advertise {
        v.push(seg::ADVERTISE_ACTION);
    }
    v
}

/// The two fixed affinities of a flow, appended to `b`: forward with the
/// NAT to the backend, reverse with the NAT back to the virtual address
/// (both ways rewritten with source NAT), each with close tracking for TCP
/// while installed and, for a spliced SYN-proxied flow, the splice's
/// sequence and timestamp adjusts.
fn push_flow(b: &mut MessageBuilder, f: &Flow, ttl: u32, tracking: InterestCriteria) {
    let all = NatAction::SRC_ADDR | NatAction::SRC_PORT | NatAction::DST_ADDR | NatAction::DST_PORT;
    let fwd_nat = match f.snat {
        Some(s) => NatAction {
            flags: all,
            src_addr: *s.ip(),
            src_port: s.port(),
            dst_addr: *f.backend.ip(),
            dst_port: f.backend.port(),
        },
        None => NatAction {
            flags: NatAction::DST_ADDR | NatAction::DST_PORT,
            dst_addr: *f.backend.ip(),
            dst_port: f.backend.port(),
            ..Default::default()
        },
    };
    let rev_nat = match f.snat {
        Some(_) => NatAction {
            flags: all,
            src_addr: *f.vip.ip(),
            src_port: f.vip.port(),
            dst_addr: f.fwd.src_addr,
            dst_port: f.fwd.src_port,
        },
        None => NatAction {
            flags: NatAction::SRC_ADDR | NatAction::SRC_PORT,
            src_addr: *f.vip.ip(),
            src_port: f.vip.port(),
            ..Default::default()
        },
    };
    let rev_tracking = InterestCriteria {
        mask: tracking.mask & !interest::SYN,
        ..tracking
    };
    let dirs = [
        (f.fwd, fwd_nat, tracking, f.splice_fwd),
        (f.rev, rev_nat, rev_tracking, f.splice_rev),
    ];
    for (key, nat, tracking, splice) in dirs {
        b.push(Segment::FixedAffinity(FixedAffinity {
            key,
            ttl,
            ..Default::default()
        }));
        b.push(Segment::NatAction(nat));
        if ttl > 0 && f.is_tcp() {
            b.push(Segment::InterestCriteria(tracking));
            // A SYN-proxied flow's splice, as its agent reported it: any
            // agent the flow crosses (FIGURE 5, a restarted agent) adjusts
            // it as the splicing agent does (PROTOCOL.md, "Splice
            // reports"). The timestamp adjust is optional: an agent that
            // predates it skips it.
            if let Some(a) = splice {
                b.push(Segment::SeqAdjustAction(a.seq));
                if let Some(t) = a.ts {
                    b.push(Segment::TsAdjustAction(t));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{renewal_chunks, FLOWS_PER_MESSAGE};
    use affinity_api::AffinityKey;

    fn key(port: u16) -> AffinityKey {
        AffinityKey {
            protocol: 6,
            src_port: port,
            ..AffinityKey::default()
        }
    }

    #[test]
    fn renewals_of_spliced_flows_take_fewer_flows_a_message() {
        let keys: Vec<AffinityKey> = (0..20).map(key).collect();
        let plain: Vec<usize> = renewal_chunks(&keys, |_| false)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(plain, [FLOWS_PER_MESSAGE, FLOWS_PER_MESSAGE, 4]);
        // 3 units each of 16: five spliced flows a message.
        let spliced: Vec<usize> = renewal_chunks(&keys, |_| true)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(spliced, [5, 5, 5, 5]);
        // Mixed (every other spliced): 2 + 3 + 2 + 3 + 2 + 3 = 15, then 16.
        let mixed: Vec<usize> = renewal_chunks(&keys, |k| k.src_port % 2 == 1)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(mixed.iter().sum::<usize>(), 20);
        assert_eq!(mixed[0], 6);
        assert!(renewal_chunks(&[], |_| true).is_empty());
    }
}
