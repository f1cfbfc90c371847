//! Which frame protocol versions this node speaks.
//!
//! A release speaks its own version and at least the one before ([`Protocols::THIS_BUILD`]); peers
//! settle on the newest both speak when they connect, so a cluster can be upgraded one host
//! at a time (see `docs/DEPLOY.md`, "Upgrading").
//!
//! With feature `testing`, the environment variable [`PROTOCOL_ENV`] set to `next` makes the
//! node speak as the next release would ([`Protocols::NEXT_BUILD`]), so that a test can run a
//! mixed cluster. The production binary is built without the feature and ignores it.

use ringkv_shared::frame::Protocols;

/// The environment variable that, with feature `testing`, makes a node speak the next
/// release's protocol versions (value `next`).
pub const PROTOCOL_ENV: &str = "RINGKV_TEST_PROTOCOL";

/// The versions this process speaks.
pub(crate) fn spoken() -> Protocols {
    #[cfg(feature = "testing")]
    if std::env::var_os(PROTOCOL_ENV).is_some_and(|v| v == "next") {
        return Protocols::NEXT_BUILD;
    }
    Protocols::THIS_BUILD
}
