//! Who may send what: the role a peer's certificate names, and the requests each role may make.
//!
//! Every certificate the cluster CA signs carries exactly one role, as a URI subject
//! alternative name ([`Role::uri`]):
//!
//! - `ringkv://node/<id>` — a storage node, which may speak only as node `<id>`: replica
//!   writes, hints, reaps, anti-entropy, handoff and gossip, besides everything a client does.
//! - `ringkv://admin/<name>` — an operator: membership changes and every read-only inspection
//!   request (status, stats, hash-tree roots, hints held, raw reads), besides what a client does.
//! - `ringkv://client/<name>` — an application: reads, coordinated writes and deletes (direct
//!   or routed), the ring, stats, and asking an owner to repair a key it read stale copies of.
//!
//! A certificate without a ringkv role (made before roles existed), or with more than one, is a
//! client's: it can do no more than read and write through the coordinators.
//!
//! [`permits`] is the whole policy: an exhaustive match, so that a new request cannot be added
//! without deciding who may send it.

use crate::ids::NodeId;
use crate::proto::Request;

/// The URI scheme of a role.
pub const ROLE_SCHEME: &str = "ringkv://";

/// What a certificate lets its holder do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// A storage node with this id.
    Node(NodeId),
    /// An operator.
    Admin,
    /// An application.
    Client,
}

impl Role {
    /// The URI SAN naming this role for a certificate called `name` (`name` is ignored for a
    /// node, whose id names it).
    pub fn uri(&self, name: &str) -> String {
        match self {
            Role::Node(id) => format!("{ROLE_SCHEME}node/{}", id.0),
            Role::Admin => format!("{ROLE_SCHEME}admin/{name}"),
            Role::Client => format!("{ROLE_SCHEME}client/{name}"),
        }
    }

    /// The role a URI SAN names; `None` if it is not a ringkv role URI (or a malformed one).
    pub fn from_uri(uri: &str) -> Option<Role> {
        let rest = uri.strip_prefix(ROLE_SCHEME)?;
        let (kind, tail) = rest.split_once('/').unwrap_or((rest, ""));
        match kind {
            "node" => {
                let id: u32 = tail.parse().ok()?;
                (id > 0).then_some(Role::Node(NodeId(id)))
            }
            "admin" => Some(Role::Admin),
            "client" => Some(Role::Client),
            _ => None,
        }
    }

    /// The role of a certificate with these URI SANs: its one ringkv role, or
    /// [`Role::Client`] if it has none or several (never more than a client may do).
    pub fn from_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Role {
        let mut roles = uris.into_iter().filter_map(Role::from_uri);
        match (roles.next(), roles.next()) {
            (Some(role), None) => role,
            _ => Role::Client,
        }
    }

    /// A short name for messages and logs.
    pub fn name(&self) -> String {
        match self {
            Role::Node(id) => format!("node {id}"),
            Role::Admin => "admin".into(),
            Role::Client => "client".into(),
        }
    }
}

/// Whether a peer holding `role` may send `request`.
pub fn permits(role: &Role, request: &Request) -> bool {
    let node = matches!(role, Role::Node(_));
    let admin = *role == Role::Admin;
    match request {
        // What an application does.
        Request::Ping
        | Request::GetRing
        | Request::Stats
        | Request::Read { .. }
        | Request::Put { .. }
        | Request::RouteGet { .. }
        | Request::RoutePut { .. }
        | Request::Repair { .. } => true,
        // A stream-level header; each request in the batch is checked on its own.
        Request::Batch { .. } => true,
        // Read-only inspection: nodes use it to compare and reap; operators to look.
        Request::AeRoots { .. } | Request::ReadMany { .. } | Request::HintsFor { .. } => {
            node || admin
        }
        // Key enumeration and everything that stores or removes data below the coordinators.
        Request::AeLeaves { .. }
        | Request::AeEntries { .. }
        | Request::Write { .. }
        | Request::WriteMany { .. }
        | Request::Reap { .. }
        | Request::Gossip { .. }
        | Request::Handoff { .. } => node,
        Request::Admin(_) => admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::AdminRequest;
    use crate::{Object, VersionVector};
    use bytes::Bytes;

    #[test]
    fn role_uris_round_trip_and_junk_is_no_role() {
        for role in [Role::Node(NodeId(7)), Role::Admin, Role::Client] {
            assert_eq!(Role::from_uri(&role.uri("ops")), Some(role.clone()));
        }
        for junk in [
            "ringkv://node/0",
            "ringkv://node/x",
            "ringkv://node/",
            "ringkv://root/1",
            "https://node/1",
            "",
        ] {
            assert_eq!(Role::from_uri(junk), None, "{junk}");
        }
    }

    #[test]
    fn no_role_or_two_roles_is_a_client() {
        assert_eq!(Role::from_uris([]), Role::Client);
        assert_eq!(
            Role::from_uris(["ringkv://node/1", "ringkv://admin/x"]),
            Role::Client
        );
        assert_eq!(
            Role::from_uris(["spiffe://x", "ringkv://admin/x"]),
            Role::Admin
        );
    }

    #[test]
    fn a_client_may_not_write_below_the_coordinators_or_administer() {
        let key = Bytes::from_static(b"k");
        let client = Role::Client;
        let forbidden = [
            Request::Write {
                key: key.clone(),
                object: Object::new(),
                hint_for: None,
            },
            Request::WriteMany {
                epoch: 1,
                items: vec![],
            },
            Request::Reap {
                key: key.clone(),
                clock: VersionVector::new(),
            },
            Request::AeLeaves { partition: 0 },
            Request::AeEntries {
                partition: 0,
                leaves: vec![],
            },
            Request::ReadMany { keys: vec![] },
            Request::HintsFor { key: key.clone() },
            Request::Admin(AdminRequest::Status),
        ];
        for r in &forbidden {
            assert!(!permits(&client, r), "a client may not send {}", r.kind());
        }
        assert!(permits(&client, &Request::Read { key: key.clone() }));
        assert!(permits(&client, &Request::Repair { key: key.clone() }));
        assert!(permits(&Role::Admin, &Request::Admin(AdminRequest::Status)));
        assert!(!permits(
            &Role::Node(NodeId(1)),
            &Request::Admin(AdminRequest::Status)
        ));
        assert!(!permits(
            &Role::Admin,
            &Request::Write {
                key,
                object: Object::new(),
                hint_for: None
            }
        ));
    }
}
