//! Advertise into routing (seed FIG 10H: an advertised address is
//! "included in routing protocol updates"): every prefix a live wildcard
//! advertises becomes a kernel route through the TUN device, tagged with
//! this agent's own route protocol number so that BIRD (`protocol kernel`
//! with `import where krt_source = N`) or FRR (`redistribute kernel` with a
//! route map on the protocol) can export exactly these routes. A prefix is
//! withdrawn when its last advertising wildcard goes (deleted or expired),
//! and all of them when the agent stops.
//!
//! Routes are changed with the `ip` command (iproute2), which every router
//! that runs this agent has: a handful of changes per service change does
//! not warrant a netlink implementation of our own.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;

/// The route protocol number the agent's routes carry unless told
/// otherwise (`--route-protocol`): unassigned in iproute2's `rt_protos`
/// (which names 0–16, 18, 42, 99, 186–189, 192).
pub const DEFAULT_ROUTE_PROTOCOL: u8 = 197;

/// A prefix: network address (masked) and prefix length in bits.
pub type Prefix = (Ipv4Addr, u8);

/// The routes this agent has installed.
pub struct Advertiser {
    dev: String,
    protocol: u8,
    installed: BTreeSet<Prefix>,
}

impl Advertiser {
    /// Routes through device `dev` tagged with route protocol `protocol`.
    pub fn new(dev: &str, protocol: u8) -> Self {
        Advertiser {
            dev: dev.to_string(),
            protocol,
            installed: BTreeSet::new(),
        }
    }

    /// Installs the prefixes of `want` not yet installed and withdraws
    /// those no longer wanted. A failed `ip` call is reported on stderr
    /// and retried at the next sync (the prefix is not recorded).
    pub fn sync(&mut self, want: &BTreeSet<Prefix>) {
        let gone: Vec<Prefix> = self.installed.difference(want).copied().collect();
        for p in gone {
            // Deleted or not, it is no longer ours to track.
            self.installed.remove(&p);
            let _ = self.ip("del", p);
        }
        for &p in want.difference(&self.installed.clone()) {
            if self.ip("replace", p) {
                self.installed.insert(p);
            }
        }
    }

    /// Withdraws every route installed (the agent is stopping).
    pub fn withdraw_all(&mut self) {
        self.sync(&BTreeSet::new());
    }

    /// `ip route VERB PREFIX dev DEV proto N`; whether it succeeded.
    fn ip(&self, verb: &str, (addr, len): Prefix) -> bool {
        let prefix = format!("{addr}/{len}");
        let proto = self.protocol.to_string();
        let args = ["route", verb, &prefix, "dev", &self.dev, "proto", &proto];
        match Command::new("ip").args(args).status() {
            Ok(s) if s.success() => true,
            Ok(s) => {
                eprintln!("affinity-agent: ip {} failed: {s}", args.join(" "));
                false
            }
            Err(e) => {
                eprintln!("affinity-agent: ip {}: {e}", args.join(" "));
                false
            }
        }
    }
}

/// The prefixes of (address, mask) pairs: the address masked, the mask's
/// length (a non-contiguous mask counts its set bits).
pub fn prefixes(advertised: &[(Ipv4Addr, Ipv4Addr)]) -> BTreeSet<Prefix> {
    advertised
        .iter()
        .map(|&(a, m)| {
            let m = u32::from(m);
            (Ipv4Addr::from(u32::from(a) & m), m.count_ones() as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::prefixes;
    use std::net::Ipv4Addr;

    #[test]
    fn prefixes_are_masked_and_deduplicated() {
        let vip = Ipv4Addr::new(203, 0, 113, 10);
        let p = prefixes(&[
            (vip, Ipv4Addr::BROADCAST),
            (vip, Ipv4Addr::BROADCAST),
            (vip, Ipv4Addr::new(255, 255, 255, 0)),
        ]);
        let v: Vec<_> = p.into_iter().collect();
        assert_eq!(
            v,
            vec![
                (Ipv4Addr::new(203, 0, 113, 0), 24),
                (Ipv4Addr::new(203, 0, 113, 10), 32)
            ]
        );
    }
}
