//! The properties the fuzz targets check, shared with the regression tests that replay the
//! inputs fuzzing found (`shared/tests/fuzz_regressions.rs`). Each takes arbitrary bytes and
//! panics only if a property fails: decoding returns a value or an error, never panics, and
//! what decodes round-trips.

use crate::NodeId;
use crate::encoding::{decode_object, decode_view, encode_object};
use crate::frame;
use crate::membership::View;
use crate::proto::{Reply, Request};
use crate::ring::{Member, Ring};

const MAX: usize = 16 << 20;

/// Any bytes as a request or reply frame.
pub fn frame(data: &[u8]) {
    if let Ok(request) = frame::decode::<Request>(data, MAX) {
        let again = frame::encode(&request, MAX).expect("a decoded request re-encodes");
        let back: Request = frame::decode(&again, MAX).expect("a re-encoded request decodes");
        assert_eq!(back, request);
    }
    let _ = frame::decode::<Reply>(data, MAX);
}

/// Any bytes as a stored object: as they are (the checksum must reject almost all of them),
/// and as the body of an object whose checksum matches (so the decoder behind it is fuzzed too).
pub fn stored_object(data: &[u8]) {
    check_object(data);
    let mut framed = vec![crate::encoding::OBJECT_FORMAT];
    framed.extend_from_slice(&crate::hash::checksum(data).to_be_bytes());
    framed.extend_from_slice(data);
    check_object(&framed);
}

fn check_object(data: &[u8]) {
    if let Ok(object) = decode_object(data) {
        let again = encode_object(&object);
        assert_eq!(decode_object(&again).expect("re-decodes"), object);
        let mut merged = object.clone();
        merged.merge(&object);
        assert_eq!(merged, object, "merge is idempotent");
    }
}

/// Any bytes as a persisted view (or, with a leading 0, a gossip request body): an accepted
/// view merges into a real one commutatively and idempotently, and the node's checked merge
/// ([`View::merge_checked`]) is idempotent and takes no ring it cannot verify.
pub fn gossip(data: &[u8]) {
    let decoded = match data.split_first() {
        Some((0, body)) => match frame::decode_body::<Request>(body) {
            Ok(Request::Gossip { view }) => Some(*view),
            _ => None,
        },
        _ => decode_view(data).ok(),
    };
    let Some(theirs) = decoded else { return };
    if theirs.validate(64).is_err() {
        return;
    }
    let members = (1..=3)
        .map(|i| {
            Member::at(
                NodeId(i),
                std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
            )
        })
        .collect();
    let mine = View::bootstrap(Ring::balanced(64, members).expect("a valid ring"));
    if mine.same_cluster(&theirs).is_err() {
        // A node refuses another cluster's view before merging it.
        return;
    }
    let mut a = mine.clone();
    a.merge(&theirs);
    let mut b = theirs.clone();
    b.merge(&mine);
    assert_eq!(a, b, "merge is commutative");
    let mut c = a.clone();
    assert!(!c.merge(&theirs), "merge is idempotent");
    // The node's path: only what it can verify of the view is merged; whatever is refused,
    // merging the same view again changes nothing more.
    for me in [NodeId(1), NodeId(9)] {
        let mut checked = mine.clone();
        let _ = checked.merge_checked(
            &theirs,
            me,
            Some(NodeId(2)),
            3,
            &crate::authority::SimulatedOperator::new(0x5EED),
        );
        let once = checked.clone();
        let _ = checked.merge_checked(
            &theirs,
            me,
            Some(NodeId(2)),
            3,
            &crate::authority::SimulatedOperator::new(0x5EED),
        );
        assert_eq!(checked, once, "a checked merge is idempotent");
        assert!(
            checked.ring == mine.ring
                || checked.ring == theirs.ring
                    && crate::planner::is_planned_step(&mine.ring, &theirs.ring, 3),
            "a checked merge takes no ring it cannot verify"
        );
        // The sender (n2) speaks for itself only: no third node's acknowledgement rises.
        let third = |id: &NodeId| *id != me && *id != NodeId(2);
        for (after, before) in [(&checked.seen, &mine.seen), (&checked.swept, &mine.swept)] {
            for id in after.keys().chain(before.keys()).filter(|id| third(id)) {
                assert!(
                    after.get(id) <= before.get(id),
                    "a peer raised {id}'s acknowledgement"
                );
            }
        }
        if let Some(t) = &checked.transition {
            // `mine` holds no transition: whatever was taken came from n2's view.
            assert!(
                t.done.iter().all(|tr| !third(&tr.from))
                    && t.hints_handed_over.iter().all(|id| !third(id)),
                "a peer acknowledged a transfer or a hand-over for another node"
            );
        }
    }
    if let Some(t) = &a.transition {
        let _ = t.remaining(&a.ring);
    }
}
