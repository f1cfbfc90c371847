//! Operation histories of a set-valued workload and the checker that judges them, as plain
//! logic (the fault suite records, this decides).
//!
//! The workload adds unique elements to a few keys by read-merge-write: read the key, take the
//! union of every sibling's elements, add one new element, write the set back with the read's
//! context. Nothing is ever removed, so after faults heal every element whose add was
//! acknowledged must be in the final set (a later write's context covers the earlier version,
//! but its value contains the element). The checker reports
//! - **lost**: acknowledged adds missing from the final set (must be 0);
//! - **phantom**: elements in the final set that no client ever tried to add (must be 0);
//! - **unknown**: adds whose outcome the client could not know, split by whether they landed;
//! - **failed but present**: adds reported "failed, not applied" that are present anyway (must
//!   be 0: the client's "not applied" must be true).

use std::collections::{BTreeMap, BTreeSet};

/// What the client said about one add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged by W replicas.
    Ok,
    /// Failed, and certainly not applied.
    Failed,
    /// Timed out or lost mid-way: it may or may not have been applied.
    Unknown,
}

/// One attempted add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The key.
    pub key: String,
    /// The unique element added.
    pub element: String,
    /// What the client said.
    pub outcome: Outcome,
}

/// The checker's verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Adds attempted.
    pub operations: usize,
    /// Adds acknowledged.
    pub acknowledged: usize,
    /// Adds that failed without being applied.
    pub failed: usize,
    /// Acknowledged adds missing from the final sets.
    pub lost: Vec<(String, String)>,
    /// Elements present that nobody tried to add.
    pub phantom: Vec<(String, String)>,
    /// Adds with unknown outcome that are present.
    pub unknown_present: usize,
    /// Adds with unknown outcome that are absent.
    pub unknown_absent: usize,
    /// Adds reported as not applied that are present anyway.
    pub failed_but_present: Vec<(String, String)>,
}

impl Report {
    /// Whether every guarantee the checker looks at held.
    pub fn is_valid(&self) -> bool {
        self.lost.is_empty() && self.phantom.is_empty() && self.failed_but_present.is_empty()
    }

    /// One line for the test's output.
    pub fn summary(&self) -> String {
        format!(
            "operations {}, acknowledged {}, failed {}, lost {}, phantom {}, unknown {} ({} present), failed-but-present {}",
            self.operations,
            self.acknowledged,
            self.failed,
            self.lost.len(),
            self.phantom.len(),
            self.unknown_present + self.unknown_absent,
            self.unknown_present,
            self.failed_but_present.len()
        )
    }
}

/// Judges a history against the final set of each key.
pub fn check(history: &[Op], finals: &BTreeMap<String, BTreeSet<String>>) -> Report {
    let empty = BTreeSet::new();
    let mut report = Report {
        operations: history.len(),
        ..Report::default()
    };
    let mut attempted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for op in history {
        attempted
            .entry(op.key.as_str())
            .or_default()
            .insert(op.element.as_str());
        let present = finals.get(&op.key).unwrap_or(&empty).contains(&op.element);
        let pair = || (op.key.clone(), op.element.clone());
        match op.outcome {
            Outcome::Ok => {
                report.acknowledged += 1;
                if !present {
                    report.lost.push(pair());
                }
            }
            Outcome::Failed => {
                report.failed += 1;
                if present {
                    report.failed_but_present.push(pair());
                }
            }
            Outcome::Unknown if present => report.unknown_present += 1,
            Outcome::Unknown => report.unknown_absent += 1,
        }
    }
    for (key, elements) in finals {
        for e in elements {
            if !attempted
                .get(key.as_str())
                .is_some_and(|a| a.contains(e.as_str()))
            {
                report.phantom.push((key.clone(), e.clone()));
            }
        }
    }
    report
}

/// The elements of a stored set value (one per line).
pub fn parse_set(value: &[u8]) -> BTreeSet<String> {
    union_of_sets([value])
}

/// The union of several stored sets (the siblings a read returned): one pass collecting
/// every element, then one sorted build, rather than a set per sibling.
pub fn union_of_sets(values: impl IntoIterator<Item = impl AsRef<[u8]>>) -> BTreeSet<String> {
    let mut elements = Vec::new();
    for value in values {
        elements.extend(
            String::from_utf8_lossy(value.as_ref())
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    elements.into_iter().collect()
}

/// The stored value of the union of stored sets (the siblings a read returned) and `extra`
/// elements: what `encode_set` of `union_of_sets(values)` plus `extra` gives, built from the
/// elements where they lie (a workload's read-add-write, without a string per element).
pub fn encode_union<'a, V: AsRef<[u8]> + 'a>(
    values: impl IntoIterator<Item = &'a V>,
    extra: &[&str],
) -> Vec<u8> {
    let mut owned: Vec<String> = Vec::new();
    let mut elements: Vec<&[u8]> = Vec::new();
    for value in values {
        let value = value.as_ref();
        if std::str::from_utf8(value).is_ok() {
            // As `str::lines` splits: at `\n`, dropping a `\r` before it.
            elements.extend(
                value
                    .split(|&b| b == b'\n')
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                    .filter(|l| !l.is_empty()),
            );
        } else {
            owned.extend(parse_set(value));
        }
    }
    elements.extend(owned.iter().map(|e| e.as_bytes()));
    // One stored set (the usual read) is sorted already: no sort then.
    if !elements.windows(2).all(|w| w[0] < w[1]) {
        elements.sort_unstable();
        elements.dedup();
    }
    for e in extra {
        if let Err(at) = elements.binary_search(&e.as_bytes()) {
            elements.insert(at, e.as_bytes());
        }
    }
    let mut out = Vec::with_capacity(elements.iter().map(|e| e.len() + 1).sum());
    for e in elements {
        out.extend_from_slice(e);
        out.push(b'\n');
    }
    out
}

/// A set as a stored value.
pub fn encode_set(set: &BTreeSet<String>) -> Vec<u8> {
    let mut out = String::new();
    for e in set {
        out.push_str(e);
        out.push('\n');
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_union_encodes_as_the_parsed_sets_would() {
        let values: [&[u8]; 4] = [b"b\na\n", b"c\r\nb\n\nz", b"\xffbad\nq\n", b""];
        for n in 0..=values.len() {
            for extra in [&[][..], &["a"][..], &["y", "d", "y"][..]] {
                let mut set = union_of_sets(&values[..n]);
                set.extend(extra.iter().map(|e| e.to_string()));
                assert_eq!(
                    encode_union(&values[..n], extra),
                    encode_set(&set),
                    "{n} values and {extra:?}"
                );
            }
        }
    }

    fn op(key: &str, element: &str, outcome: Outcome) -> Op {
        Op {
            key: key.into(),
            element: element.into(),
            outcome,
        }
    }

    #[test]
    fn the_checker_finds_lost_phantom_and_false_failures() {
        let history = vec![
            op("a", "1", Outcome::Ok),
            op("a", "2", Outcome::Ok),
            op("a", "3", Outcome::Unknown),
            op("a", "4", Outcome::Unknown),
            op("b", "5", Outcome::Failed),
            op("b", "6", Outcome::Failed),
        ];
        let mut finals = BTreeMap::new();
        finals.insert("a".to_string(), parse_set(b"1\n3\n9\n"));
        finals.insert("b".to_string(), parse_set(b"6\n"));
        let r = check(&history, &finals);
        assert_eq!(r.lost, vec![("a".into(), "2".into())]);
        assert_eq!(r.phantom, vec![("a".into(), "9".into())]);
        assert_eq!(r.failed_but_present, vec![("b".into(), "6".into())]);
        assert_eq!((r.unknown_present, r.unknown_absent), (1, 1));
        assert_eq!((r.operations, r.acknowledged, r.failed), (6, 2, 2));
        assert!(!r.is_valid());
        assert!(r.summary().contains("lost 1"), "{}", r.summary());
    }

    #[test]
    fn a_clean_history_passes() {
        let history = vec![op("a", "1", Outcome::Ok), op("a", "2", Outcome::Unknown)];
        let mut finals = BTreeMap::new();
        finals.insert("a".to_string(), parse_set(&encode_set(&parse_set(b"1\n"))));
        let r = check(&history, &finals);
        assert!(r.is_valid(), "{r:?}");
        assert_eq!(r.unknown_absent, 1);
    }
}
