//! Parsing a fixed-affinity update allocates nothing (views over the datagram).

use affinity_api::{
    AffinityKey, FixedAffinity, InterestCriteria, MessageBuilder, MessageType, NatAction, Segment,
    ServiceMessage,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarding the caller's contract to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `alloc` above with the same layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn parsing_a_fixed_update_does_not_allocate() {
    let mut b = MessageBuilder::new(MessageType::AffinityUpdateFixed, 1);
    for i in 0..8u16 {
        b.push(Segment::FixedAffinity(FixedAffinity {
            key: AffinityKey {
                src_port: i,
                ..Default::default()
            },
            ttl: 30,
            ..Default::default()
        }));
        b.push(Segment::NatAction(NatAction {
            flags: 2,
            ..Default::default()
        }));
        b.push(Segment::InterestCriteria(InterestCriteria {
            mask: 1,
            ..Default::default()
        }));
    }
    b.push(Segment::IpPacket(&[0x45; 40]));
    let bytes = b.finish().unwrap();
    let before = ALLOCS.load(Ordering::SeqCst);
    let msg = ServiceMessage::parse(&bytes).unwrap();
    let mut n = 0;
    for e in msg.affinities() {
        n += e.nat.is_some() as usize;
    }
    let after = ALLOCS.load(Ordering::SeqCst);
    assert_eq!(n, 8);
    assert_eq!(after - before, 0, "allocations while parsing");
}
