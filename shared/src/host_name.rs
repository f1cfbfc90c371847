//! A member's host name with its port (`db1.example.net:7001`): the name an operator gave a
//! node, kept in the ring and the view beside the address it resolved to, so that peers and
//! clients dial whatever the name resolves to when they (re)connect. A host moved to a new
//! address (a replaced machine, a rescheduled container) is found again under its name
//! without a ring change.
//!
//! Names are a protocol-version-4 addition: a frame of an older version leaves them out
//! ([`crate::frame::encoding_version`]), so a peer of the release before still reads rings
//! and views; it dials the addresses alone.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// The longest host name with its port: a DNS name's 253 bytes, a colon and five digits.
pub const MAX_HOST_NAME_BYTES: usize = 253 + 1 + 5;

/// The first protocol version that carries host names.
pub const HOST_NAMES_SINCE: u8 = 4;

/// A host name and port, as `host:port` (never an IP address: those need no resolving).
/// Cheap to clone: rings hand members out with every request.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostName(Arc<str>);

/// Why a text is not a host name with a port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostNameError {
    /// Longer than [`MAX_HOST_NAME_BYTES`].
    #[error("a host name with its port is at most {MAX_HOST_NAME_BYTES} bytes, not {len}")]
    TooLong {
        /// The text's length.
        len: usize,
    },
    /// Not `host:port` with a port number.
    #[error("`{text}` is not host:port")]
    NoPort {
        /// The text.
        text: String,
    },
    /// The host part is empty, an IP address, or holds a character a DNS name cannot.
    #[error("`{host}` is not a host name (letters, digits, `-`, `_` and `.` only)")]
    BadHost {
        /// The host part.
        host: String,
    },
}

impl HostName {
    /// Parses `host:port`. An IP address is refused: it is an address, not a name.
    pub fn parse(text: &str) -> Result<HostName, HostNameError> {
        if text.len() > MAX_HOST_NAME_BYTES {
            return Err(HostNameError::TooLong { len: text.len() });
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(HostNameError::NoPort { text: text.into() });
        };
        if port.parse::<u16>().is_err() {
            return Err(HostNameError::NoPort { text: text.into() });
        }
        let name_chars = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if host.is_empty() || !name_chars || host.parse::<std::net::IpAddr>().is_ok() {
            return Err(HostNameError::BadHost { host: host.into() });
        }
        Ok(HostName(text.into()))
    }

    /// The name as `host:port`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for HostName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for HostName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl Serialize for HostName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for HostName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HostName::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde's `skip_serializing_if` for a member's name: left out when absent, and in frames of
/// a version before [`HOST_NAMES_SINCE`].
pub fn omit(host: &Option<HostName>) -> bool {
    host.is_none() || crate::frame::encoding_version() < HOST_NAMES_SINCE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_ports_parse_and_addresses_do_not() {
        assert_eq!(
            HostName::parse("db1.example.net:7001").unwrap().as_str(),
            "db1.example.net:7001"
        );
        assert!(HostName::parse("localhost:1").is_ok());
        for (bad, why) in [
            ("db1.example.net", "not host:port"),
            ("db1:port", "not host:port"),
            (":7001", "not a host name"),
            ("10.0.0.1:7001", "not a host name"),
            ("db 1:7001", "not a host name"),
        ] {
            let e = HostName::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let long = format!("{}:1", "a".repeat(MAX_HOST_NAME_BYTES));
        assert!(matches!(
            HostName::parse(&long),
            Err(HostNameError::TooLong { .. })
        ));
    }

    #[test]
    fn a_received_name_is_checked_like_a_parsed_one() {
        let bytes = rmp_serde::to_vec(&"10.0.0.1:7001").unwrap();
        assert!(rmp_serde::from_slice::<HostName>(&bytes).is_err());
        let bytes = rmp_serde::to_vec(&"n1.test:7001").unwrap();
        assert_eq!(
            rmp_serde::from_slice::<HostName>(&bytes).unwrap(),
            HostName::parse("n1.test:7001").unwrap()
        );
    }
}
