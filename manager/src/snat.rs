//! Source NAT port allocation: never hands out a port in use.

/// Ports of one SNAT address.
#[derive(Debug, Clone)]
pub struct PortPool {
    lo: u16,
    hi: u16,
    used: Vec<bool>,
    next: usize,
    in_use: usize,
}

impl PortPool {
    pub fn new(lo: u16, hi: u16) -> Self {
        let (lo, hi) = (lo.min(hi), hi.max(lo));
        PortPool {
            lo,
            hi,
            used: vec![false; (hi - lo) as usize + 1],
            next: 0,
            in_use: 0,
        }
    }
    pub fn range(&self) -> (u16, u16) {
        (self.lo, self.hi)
    }
    pub fn size(&self) -> usize {
        self.used.len()
    }
    pub fn in_use(&self) -> usize {
        self.in_use
    }
    /// A free port, rotating through the range so a released port is not
    /// reused at once (its old flow's last packets may still be in flight).
    pub fn allocate(&mut self) -> Option<u16> {
        let n = self.used.len();
        for i in 0..n {
            let idx = (self.next + i) % n;
            if !self.used[idx] {
                self.used[idx] = true;
                self.next = (idx + 1) % n;
                self.in_use += 1;
                return Some(self.lo + idx as u16);
            }
        }
        None
    }
    pub fn release(&mut self, port: u16) {
        if let Some(u) = port
            .checked_sub(self.lo)
            .and_then(|i| self.used.get_mut(i as usize))
        {
            if *u {
                *u = false;
                self.in_use -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PortPool;

    #[test]
    fn never_hands_out_a_port_in_use_and_reports_exhaustion() {
        let mut p = PortPool::new(1000, 1002);
        let a: Vec<u16> = (0..3).map(|_| p.allocate().unwrap()).collect();
        assert_eq!(a, [1000, 1001, 1002]);
        assert_eq!(p.allocate(), None);
        p.release(1001);
        p.release(1001);
        p.release(7);
        assert_eq!(p.in_use(), 2);
        assert_eq!(p.allocate(), Some(1001));
        assert_eq!(p.allocate(), None);
    }
}
