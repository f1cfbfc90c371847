//! Replays every input kept under `tests/fuzz_regressions/<target>/` (inputs that once broke a
//! decoder, plus the seed corpus) through the fuzz targets' checks, so a fixed bug stays fixed
//! without cargo-fuzz.

use ringkv_shared::fuzz_checks;
use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the regression folder exists") {
        let path = entry.expect("readable folder").path();
        let bytes = std::fs::read(&path).expect("readable input");
        println!("{}", path.display());
        check(&bytes);
        n += 1;
    }
    n
}

#[test]
fn frame_inputs_decode_or_fail_cleanly() {
    assert!(replay("frame", fuzz_checks::frame) > 0);
}

#[test]
fn stored_object_inputs_decode_or_fail_cleanly() {
    assert!(replay("stored_object", fuzz_checks::stored_object) > 0);
}

#[test]
fn gossip_inputs_decode_or_fail_cleanly() {
    assert!(replay("gossip", fuzz_checks::gossip) > 0);
}

/// Writes the seed corpus (valid encodings of each input kind) into the regression folders;
/// run by hand before fuzzing: `cargo test -p ringkv-shared --test fuzz_regressions -- --ignored`.
#[test]
#[ignore]
fn write_seed_corpus() {
    use bytes::Bytes;
    use ringkv_shared::encoding::{encode_object, encode_view};
    use ringkv_shared::membership::View;
    use ringkv_shared::proto::{Quorum, Request};
    use ringkv_shared::{ActorId, Member, NodeId, Object, Ring, VersionVector};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let members: Vec<Member> = (1..=3)
        .map(|i| {
            Member::at(
                NodeId(i),
                std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
            )
        })
        .collect();
    let mut object = Object::new();
    object
        .update(
            &VersionVector::default(),
            Some(Bytes::from_static(b"v1")),
            ActorId(1),
        )
        .unwrap();
    let mut other = Object::new();
    other
        .update(
            &VersionVector::default(),
            Some(Bytes::from_static(b"v2")),
            ActorId(2),
        )
        .unwrap();
    object.merge(&other);
    let mut view = View::bootstrap(Ring::balanced(64, members.clone()).unwrap());
    view.announce(NodeId(4), "127.0.0.1:7004".parse().unwrap());
    view.stage_join(NodeId(4)).unwrap();
    ringkv_shared::authority::SimulatedOperator::new(0x5EED)
        .commit(&mut view, 3)
        .unwrap();
    let requests = [
        Request::Ping,
        Request::Read {
            key: Bytes::from_static(b"k"),
        },
        Request::Write {
            key: Bytes::from_static(b"k"),
            object: object.clone(),
            hint_for: Some(NodeId(2)),
        },
        Request::Put {
            key: Bytes::from_static(b"k"),
            context: object.clock().clone(),
            value: Some(Bytes::from_static(b"v")),
            quorum: Quorum {
                n: 3,
                required: 2,
                timeout_ms: 1000,
            },
            return_body: false,
        },
        Request::Gossip {
            view: Box::new(view.clone()),
        },
    ];
    for (i, r) in requests.iter().enumerate() {
        let f = ringkv_shared::frame::encode(r, 16 << 20).unwrap();
        std::fs::write(dir.join(format!("frame/seed-{i}")), &f).unwrap();
    }
    std::fs::write(dir.join("stored_object/seed-0"), encode_object(&object)).unwrap();
    std::fs::write(dir.join("gossip/seed-0"), encode_view(&view)).unwrap();
    let gossip = ringkv_shared::frame::encode(
        &Request::Gossip {
            view: Box::new(view),
        },
        16 << 20,
    )
    .unwrap();
    let mut body = vec![0u8];
    body.extend_from_slice(&gossip[4..]);
    std::fs::write(dir.join("gossip/seed-1"), body).unwrap();
    // A view that carries acknowledgements of n2 (the sender in the checks) and n3 (a third
    // node, whose acknowledgements a checked merge must not take from n2).
    let mut acked = view_for_acks(&members);
    for node in [NodeId(2), NodeId(3)] {
        acked.mark_seen(node);
        acked.mark_swept(node, acked.ring.epoch());
        let transition = acked.transition.clone().unwrap();
        for transfer in transition.transfers(&acked.ring) {
            if transfer.from == node {
                acked.mark_done(transfer);
            }
        }
    }
    std::fs::write(dir.join("gossip/seed-2"), encode_view(&acked)).unwrap();
}

/// The seed view with a committed join of n4 (see [`write_seed_corpus`]).
fn view_for_acks(members: &[ringkv_shared::Member]) -> ringkv_shared::membership::View {
    use ringkv_shared::{NodeId, Ring, membership::View};
    let mut view = View::bootstrap(Ring::balanced(64, members.to_vec()).expect("a valid ring"));
    view.announce(NodeId(4), "127.0.0.1:7004".parse().expect("an address"));
    view.stage_join(NodeId(4)).expect("n4 can join");
    ringkv_shared::authority::SimulatedOperator::new(0x5EED)
        .commit(&mut view, 3)
        .expect("the join commits");
    view
}
