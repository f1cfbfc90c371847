//! Connection caps: at most `max_connections` open connections per node and
//! `max_connections_per_ip` from one IP address. A connection over either cap is refused before
//! its TLS handshake runs, so a peer that opens connections without end costs the node one
//! refusal packet each, not a handshake and a task.
//!
//! The accounting has no I/O: [`ConnectionSlots::take`] hands out a [`Slot`] that gives its
//! place back when dropped (when the connection's task ends).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The node has `max` connections open.
    #[error("the node has {max} connections open (limits.max_connections)")]
    NodeFull {
        /// The cap.
        max: usize,
    },
    /// This address has `max` connections open.
    #[error("{ip} has {max} connections open (limits.max_connections_per_ip)")]
    AddressFull {
        /// The address.
        ip: IpAddr,
        /// The cap.
        max: usize,
    },
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Open connections, per node and per IP address, against their caps.
#[derive(Clone)]
pub(crate) struct ConnectionSlots {
    max_total: usize,
    max_per_ip: usize,
    counts: Arc<Mutex<Counts>>,
}

/// One open connection's place; given back on drop.
pub(crate) struct Slot {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionSlots {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            max_total,
            max_per_ip,
            counts: Arc::default(),
        }
    }

    /// A place for a connection from `ip`, if both caps allow one.
    pub(crate) fn take(&self, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.max_total {
            return Err(Refusal::NodeFull {
                max: self.max_total,
            });
        }
        let from_ip = counts.per_ip.entry(ip).or_default();
        if *from_ip >= self.max_per_ip {
            return Err(Refusal::AddressFull {
                ip,
                max: self.max_per_ip,
            });
        }
        *from_ip += 1;
        counts.total += 1;
        Ok(Slot {
            ip,
            counts: self.counts.clone(),
        })
    }

    /// Open connections (for tests and metrics).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_per_node_and_places_come_back() {
        let slots = ConnectionSlots::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = slots.take(a).unwrap();
        let _a2 = slots.take(a).unwrap();
        assert_eq!(
            slots.take(a).err(),
            Some(Refusal::AddressFull { ip: a, max: 2 })
        );
        let _b1 = slots.take(b).unwrap();
        assert_eq!(slots.take(b).err(), Some(Refusal::NodeFull { max: 3 }));
        drop(a1);
        assert_eq!(slots.open(), 2);
        let _b2 = slots.take(b).expect("a place came back");
        assert_eq!(slots.open(), 3);
    }
}
