//! Receive → verify → dispatch: a datagram's messages parsed, authenticated
//! (keys, identities, sequence bounds, receiver, replay window) and handed
//! to the part that handles their type.

use super::{
    auth_counter, packet_key, Interest, ManagerCore, Outgoing, HELLO_LOG_INTERVAL, MAX_PEERS, SEC,
};
use affinity_api::{
    datagram_messages, interest, unix_now, AffinityRef, AuthError, MessageType, ServiceMessage,
};
use std::net::SocketAddrV4;

impl ManagerCore {
    /// Handles a datagram from `from`: its message, or its messages back to
    /// back (PROTOCOL.md); broken framing is counted as unparsable.
    pub fn handle_datagram(&mut self, now: u64, from: SocketAddrV4, bytes: &[u8]) -> Vec<Outgoing> {
        self.clock = self.clock.max(now);
        let mut out = Vec::new();
        for m in datagram_messages(bytes) {
            out.extend(self.handle_message(now, from, m.unwrap_or_default()));
        }
        out
    }

    pub(super) fn handle_message(
        &mut self,
        now: u64,
        from: SocketAddrV4,
        bytes: &[u8],
    ) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let msg = match ServiceMessage::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.count("rx-parse-error");
                tracing::debug!(%from, error = %e, "unparsable service message");
                return out;
            }
        };
        // Seed: with no key and signatures not required, a security
        // segment is ignored and the message accepted.
        let keyless = self.auth.keys.is_empty() && !self.auth.require;
        let signed = msg.security().is_some() && !keyless;
        let checked = if keyless {
            Ok(())
        } else {
            self.auth
                .verify_from(&msg, now / SEC, *from.ip())
                .and_then(|()| {
                    if signed {
                        self.auth.check_sequence(msg.sequence(), unix_now())
                    } else {
                        Ok(())
                    }
                })
                .and_then(|()| match msg.receiver() {
                    Some(r)
                        if r != *self.cfg.manager.listen.ip()
                            && !self.cfg.manager.listen.ip().is_unspecified() =>
                    {
                        Err(AuthError::WrongReceiver)
                    }
                    _ => Ok(()),
                })
        };
        if let Err(e) = checked {
            self.count("rx-auth-failed");
            self.count(auth_counter(&e));
            if self.last_auth_log == 0 || now.saturating_sub(self.last_auth_log) >= SEC {
                self.last_auth_log = now.max(1);
                tracing::warn!(%from, reason = e.reason(), error = %e, "service message refused (logged at most once a second; see rx-auth-* counters)");
            }
            return out;
        }
        if signed {
            let ip = *from.ip();
            if !self.replay.contains_key(&ip) && self.replay.len() >= MAX_PEERS {
                self.count("rx-peer-table-full");
                return out;
            }
            if !self.replay.entry(ip).or_default().accept(msg.sequence()) {
                self.count("rx-replay");
                return out;
            }
        }
        if !self.agents.contains_key(&from) && self.agents.len() >= MAX_PEERS {
            // Unverified senders (open mode) must not grow the table without
            // bound; entries also expire (`tick`). The message is still handled.
            self.count("agent-table-full");
        } else {
            let agent = self.agents.entry(from).or_default();
            agent.last_heard = now;
            if let Some(i) = msg.identity() {
                if agent.name != i.host_name {
                    agent.name = i.host_name.to_string();
                }
            }
        }
        // Open mode: an address not shown to receive what is sent to it
        // gets a challenge no larger than its message instead of a full
        // answer (return routability, `routability.rs`).
        let answers_full = signed || self.routable(now, from);
        if !answers_full
            && matches!(
                msg.msg_type(),
                MessageType::InterestMatchWildcard
                    | MessageType::InterestMatchFixed
                    | MessageType::IpPacketOnly
            )
        {
            self.challenge_for(now, from, bytes, &mut out);
            return out;
        }
        match msg.msg_type() {
            MessageType::InterestMatchWildcard | MessageType::InterestMatchFixed => {
                self.count("rx-interest-match");
                if let Some(a) = self.agents.get_mut(&from) {
                    a.interest_matches += 1;
                }
                let Some(e) = msg.affinities().next() else {
                    return out;
                };
                let AffinityRef::Fixed(f) = e.affinity else {
                    return out;
                };
                let m = Interest {
                    from,
                    key: f.key,
                    reason: e.identifier.map_or(0, |i| i.reason),
                    tracking: msg.msg_type() == MessageType::InterestMatchFixed,
                    echo: msg.fa_interest_data(),
                    packet: msg.ip_packet(),
                };
                self.on_interest(now, m, &mut out);
            }
            MessageType::IpPacketOnly => {
                self.count("rx-ip-packet-only");
                if let Some((key, flags)) = msg.ip_packet().and_then(packet_key) {
                    let m = Interest {
                        from,
                        key,
                        // TCP flag bits FIN..URG are interest bits 0x01..0x20.
                        reason: flags as u16 | interest::ALL,
                        tracking: false,
                        echo: msg.fa_interest_data(),
                        packet: msg.ip_packet(),
                    };
                    self.on_interest(now, m, &mut out);
                }
            }
            MessageType::AffinityUpdateDeny => self.on_deny(now, from, &msg, signed, &mut out),
            MessageType::StatisticsReport => self.on_activity(now, from, &msg, &mut out),
            MessageType::AgentHello => {
                // Only agents already in the (bounded) table are logged: an
                // unverified flood of hellos must not grow it.
                if let Some(a) = self.agents.get_mut(&from) {
                    if a.hello_logged == 0
                        || now.saturating_sub(a.hello_logged) >= HELLO_LOG_INTERVAL
                    {
                        a.hello_logged = now.max(1);
                        tracing::info!(agent = %from, name = %a.name, "agent hello");
                    }
                }
                self.on_hello(from, &msg);
                self.resync_agent(now, from, signed, &mut out);
            }
            MessageType::Keepalive => match msg.sm_interest_data() {
                Some(cookie) => self.on_cookie(now, from, cookie, &mut out),
                None => self.count("rx-hello"),
            },
            _ => self.count("rx-unexpected-type"),
        }
        // Whatever else an unauthenticated message drew to its claimed
        // source (e.g. deletions resent for an activity report) goes only
        // if it is no larger than the message: never an amplifier.
        if !signed && !self.routable(now, from) {
            let to_sender = |o: &Outgoing| o.0.ip() == from.ip();
            let sent: usize = out.iter().filter(|o| to_sender(o)).map(|o| o.1.len()).sum();
            if sent > bytes.len() {
                out.retain(|o| !to_sender(o));
                self.count("answers-larger-than-request-dropped");
            }
        }
        out
    }
}
