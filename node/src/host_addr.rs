//! Addresses in a node's configuration: an IP address with its port (`10.0.0.11:7001`,
//! `[::1]:7001`) or a host name with its port (`db1.example.net:7001`, `localhost:7001`),
//! resolved when the configuration is read. Resolution prefers an IPv4 address, as a host
//! with both usually serves the cluster on the one its peers use.

use serde::{Deserialize, Deserializer};
use std::net::{SocketAddr, ToSocketAddrs};

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
