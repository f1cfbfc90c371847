//! Host names to addresses, at the moment of dialling: a member given by name
//! ([`ringkv_shared::Member::host`]) is resolved again whenever a new connection to it is
//! made, so a host that moved to another address is found again under its name.

use std::net::SocketAddr;
use std::time::Duration;

/// How long a lookup may take before the caller falls back to the last address it knew.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The addresses `host` (`host:port`) resolves to now, IPv4 first (a host with both usually
/// serves the cluster on the one its peers use).
pub async fn resolve_host(host: &str) -> Result<Vec<SocketAddr>, String> {
    let lookup = tokio::net::lookup_host(host);
    let mut addrs: Vec<SocketAddr> = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
        .await
        .map_err(|_| format!("no answer within {} s", RESOLVE_TIMEOUT.as_secs()))?
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    addrs.sort_by_key(|a| !a.is_ipv4());
    if addrs.is_empty() {
        return Err("resolves to no address".into());
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn localhost_resolves_with_its_port_and_nonsense_does_not() {
        let addrs = resolve_host("localhost:7001").await.expect("localhost");
        assert!(
            addrs
                .iter()
                .all(|a| a.port() == 7001 && a.ip().is_loopback())
        );
        assert!(resolve_host("no-such-host.invalid:1").await.is_err());
    }
}
