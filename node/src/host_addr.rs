//! Addresses in a node's configuration: an IP address with its port (`10.0.0.11:7001`,
//! `[::1]:7001`) or a host name with its port (`db1.example.net:7001`, `localhost:7001`),
//! resolved when the configuration is read. Resolution prefers an IPv4 address, as a host
//! with both usually serves the cluster on the one its peers use.

use ringkv_shared::HostName;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::{SocketAddr, ToSocketAddrs};

/// An address from a configuration with the name it was given by, if any: the address is
/// where the name pointed when the configuration was read; the name goes into the ring and
/// the view ([`ringkv_shared::Member::host`]) so that peers and clients resolve it again when
/// they reconnect, and a seed given by name is resolved again whenever the node turns to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAddr {
    /// The address, resolved when the configuration was read.
    pub addr: SocketAddr,
    /// The `host:port` it was written as, when that was a name and not an IP address.
    pub name: Option<HostName>,
}

impl HostAddr {
    /// Parses and resolves `text` (`host:port` or `ip:port`).
    pub fn parse(text: &str) -> Result<HostAddr, String> {
        let addr = resolve(text)?;
        let name = match text.parse::<SocketAddr>() {
            Ok(_) => None,
            Err(_) => Some(HostName::parse(text).map_err(|e| e.to_string())?),
        };
        Ok(HostAddr { addr, name })
    }
}

impl From<SocketAddr> for HostAddr {
    fn from(addr: SocketAddr) -> Self {
        HostAddr { addr, name: None }
    }
}

impl std::fmt::Display for HostAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} ({})", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

impl Serialize for HostAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.name {
            Some(name) => s.serialize_str(name.as_str()),
            None => s.collect_str(&self.addr),
        }
    }
}

impl<'de> Deserialize<'de> for HostAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HostAddr::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Resolves `text` (`host:port` or `ip:port`) to one socket address.
pub fn resolve(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("`{text}` is not host:port (the port is missing)"));
    };
    if host.is_empty() {
        return Err(format!("`{text}` names no host"));
    }
    if port.parse::<u16>().is_err() {
        return Err(format!("`{text}`: `{port}` is not a port number"));
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{text}`: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("`{host}` resolves to no address"))
}

/// Serde: one address, resolved.
pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    resolve(&text).map_err(serde::de::Error::custom)
}

/// Serde: an optional address, resolved.
pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(text) => resolve(&text).map(Some).map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

/// Serde: a list of addresses, each resolved.
pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|t| resolve(t).map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addresses_and_host_names_resolve() {
        assert_eq!(
            resolve("10.0.0.11:7001"),
            Ok("10.0.0.11:7001".parse().unwrap())
        );
        assert_eq!(resolve("[::1]:7001"), Ok("[::1]:7001".parse().unwrap()));
        let local = resolve("localhost:7001").expect("localhost resolves");
        assert!(local.ip().is_loopback() && local.port() == 7001, "{local}");
    }

    #[test]
    fn what_cannot_be_an_address_is_refused_saying_why() {
        assert!(
            resolve("localhost")
                .unwrap_err()
                .contains("port is missing")
        );
        assert!(resolve(":7001").unwrap_err().contains("names no host"));
        assert!(
            resolve("localhost:http")
                .unwrap_err()
                .contains("not a port number")
        );
        let e = resolve("no-such-host.invalid:7001").unwrap_err();
        assert!(
            e.contains("cannot resolve `no-such-host.invalid:7001`"),
            "{e}"
        );
    }
}
