//! Histories of the unique-key workload and the checker that judges them, as plain logic (the
//! fault suite records, this decides).
//!
//! Every key is written once, with a value only it has ([`value_of`]), and perhaps deleted
//! once afterwards (the delete is sent only after the write was acknowledged). After faults
//! heal and the replicas converge, the final owners' copies must say, key by key:
//! - **lost** (must be 0): an acknowledged write with no acknowledged delete is not live, or a
//!   delete reported "failed, not applied" removed it anyway;
//! - **resurrected** (must be 0): an acknowledged delete, and the key is live again;
//! - **phantom** (must be 0): a live key nobody wrote, or a live value its key never had;
//! - **failed but present** (must be 0): a write reported "failed, not applied" is live;
//! - **duplicated** (must be 0): a key written once holds more than one live sibling, so one
//!   write was stored twice under two version stamps.
//!
//! Writes or deletes whose outcome the client could not know may go either way.

use crate::testing::history::Outcome;
use std::collections::{BTreeMap, BTreeSet};

/// One key of the unique-key workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyOp {
    /// The key, written once.
    pub key: String,
    /// What the client said about the write.
    pub write: Outcome,
    /// What the client said about the delete that followed, if one was sent.
    pub delete: Option<Outcome>,
}

/// The value the workload writes under `key`: the key itself, so a value found under another
/// key is evidence of a phantom.
pub fn value_of(key: &str) -> Vec<u8> {
    key.as_bytes().to_vec()
}

/// The checker's verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UniqueReport {
    /// Keys written.
    pub keys: usize,
    /// Writes acknowledged.
    pub acknowledged: usize,
    /// Deletes acknowledged.
    pub deleted: usize,
    /// Writes or deletes whose outcome was unknown.
    pub unknown: usize,
    /// Acknowledged writes gone without an acknowledged delete.
    pub lost: Vec<String>,
    /// Acknowledged deletes whose key is live again.
    pub resurrected: Vec<String>,
    /// Live keys nobody wrote, or values their key never had.
    pub phantom: Vec<String>,
    /// Writes reported as not applied that are live.
    pub failed_but_present: Vec<String>,
    /// Keys holding more than one live sibling, with the count.
    pub duplicated: Vec<(String, usize)>,
}

impl UniqueReport {
    /// Whether every guarantee the checker looks at held.
    pub fn is_valid(&self) -> bool {
        self.lost.is_empty()
            && self.resurrected.is_empty()
            && self.phantom.is_empty()
            && self.failed_but_present.is_empty()
            && self.duplicated.is_empty()
    }

    /// One line for the test's output.
    pub fn summary(&self) -> String {
        format!(
            "keys {}, acknowledged {}, deleted {}, unknown {}, lost {}, resurrected {}, phantom {}, failed-but-present {}, duplicated {}",
            self.keys,
            self.acknowledged,
            self.deleted,
            self.unknown,
            self.lost.len(),
            self.resurrected.len(),
            self.phantom.len(),
            self.failed_but_present.len(),
            self.duplicated.len()
        )
    }
}

/// Judges a history against `live`: for each key the final owners hold a live value for, its
/// live siblings (from the owner holding the most). Keys absent from `live` are deleted or
/// were never stored.
pub fn check(history: &[KeyOp], live: &BTreeMap<String, Vec<Vec<u8>>>) -> UniqueReport {
    let mut report = UniqueReport {
        keys: history.len(),
        ..UniqueReport::default()
    };
    let mut written = BTreeSet::new();
    for op in history {
        written.insert(op.key.as_str());
        let is_live = live.get(&op.key).is_some_and(|v| !v.is_empty());
        let key = || op.key.clone();
        if op.write == Outcome::Ok {
            report.acknowledged += 1;
        }
        if op.write == Outcome::Unknown || op.delete == Some(Outcome::Unknown) {
            report.unknown += 1;
        }
        match (op.write, op.delete) {
            (Outcome::Ok, None | Some(Outcome::Failed)) if !is_live => report.lost.push(key()),
            (Outcome::Ok, Some(Outcome::Ok)) => {
                report.deleted += 1;
                if is_live {
                    report.resurrected.push(key());
                }
            }
            (Outcome::Failed, _) if is_live => report.failed_but_present.push(key()),
            _ => {}
        }
    }
    for (key, values) in live {
        if !written.contains(key.as_str()) || values.iter().any(|v| *v != value_of(key)) {
            report.phantom.push(key.clone());
        }
        if values.len() > 1 {
            report.duplicated.push((key.clone(), values.len()));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, write: Outcome, delete: Option<Outcome>) -> KeyOp {
        KeyOp {
            key: key.into(),
            write,
            delete,
        }
    }

    fn live(keys: &[(&str, usize)]) -> BTreeMap<String, Vec<Vec<u8>>> {
        keys.iter()
            .map(|(k, n)| (k.to_string(), vec![value_of(k); *n]))
            .collect()
    }

    #[test]
    fn each_broken_guarantee_is_named() {
        let history = vec![
            op("lost", Outcome::Ok, None),
            op(
                "lost-by-a-failed-delete",
                Outcome::Ok,
                Some(Outcome::Failed),
            ),
            op("back", Outcome::Ok, Some(Outcome::Ok)),
            op("failed", Outcome::Failed, None),
            op("twice", Outcome::Ok, None),
        ];
        let mut finals = live(&[("back", 1), ("failed", 1), ("twice", 2), ("nobody", 1)]);
        finals.insert("lost".into(), vec![]);
        let r = check(&history, &finals);
        assert_eq!(r.lost, vec!["lost", "lost-by-a-failed-delete"]);
        assert_eq!(r.resurrected, vec!["back"]);
        assert_eq!(r.failed_but_present, vec!["failed"]);
        assert_eq!(r.duplicated, vec![("twice".to_string(), 2)]);
        assert_eq!(r.phantom, vec!["nobody"]);
        assert_eq!((r.keys, r.acknowledged, r.deleted), (5, 4, 1));
        assert!(!r.is_valid());
        assert!(r.summary().contains("resurrected 1"), "{}", r.summary());
    }

    #[test]
    fn a_value_under_the_wrong_key_is_a_phantom() {
        let history = vec![op("a", Outcome::Ok, None)];
        let finals = BTreeMap::from([("a".to_string(), vec![value_of("b")])]);
        assert_eq!(check(&history, &finals).phantom, vec!["a"]);
    }

    #[test]
    fn unknown_outcomes_may_go_either_way() {
        let history = vec![
            op("w-landed", Outcome::Unknown, None),
            op("w-lost", Outcome::Unknown, None),
            op("d-landed", Outcome::Ok, Some(Outcome::Unknown)),
            op("d-lost", Outcome::Ok, Some(Outcome::Unknown)),
            op("kept", Outcome::Ok, None),
            op("gone", Outcome::Ok, Some(Outcome::Ok)),
            op("refused", Outcome::Failed, None),
        ];
        let r = check(
            &history,
            &live(&[("w-landed", 1), ("d-lost", 1), ("kept", 1)]),
        );
        assert!(r.is_valid(), "{r:?}");
        assert_eq!(r.unknown, 4);
    }
}
