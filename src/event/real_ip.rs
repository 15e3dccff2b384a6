//! The client behind trusted proxies, as nginx's realip module finds it
//! (`set_real_ip_from` + `real_ip_header X-Forwarded-For` +
//! `real_ip_recursive on`), for `client_ip_from = "x_forwarded_for"`.
//!
//! The address the server saw is believed only when it is not a trusted
//! proxy. When it is one, the X-Forwarded-For list is read from its right
//! end (the hop nearest the server): the first address that is not a
//! trusted proxy is the client. A header can be written by anyone, so an
//! address a client put at the left of the list is never taken unless
//! every hop after it is trusted.

use std::borrow::Cow;
use std::net::IpAddr;

use ipnet::IpNet;

/// The proxies whose X-Forwarded-For is believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealIp {
    trusted: Vec<IpNet>,
}

impl RealIp {
    /// From CIDRs (`10.0.0.0/8`) or single addresses (`192.0.2.1`).
    pub fn new(trusted: &[String]) -> Result<Self, String> {
        let trusted = trusted
            .iter()
            .map(|t| {
                let t = t.trim();
                t.parse::<IpNet>()
                    .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{t:?} is not an address or a CIDR range"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RealIp { trusted })
    }

    fn is_trusted(&self, ip: &str) -> Option<bool> {
        let ip: IpAddr = ip.trim().parse().ok()?;
        Some(self.trusted.iter().any(|n| n.contains(&ip)))
    }

    /// The client address, from the address the server saw (`peer`) and
    /// the X-Forwarded-For header (`forwarded`).
    pub fn client<'a>(&self, peer: &'a str, forwarded: &'a str) -> Cow<'a, str> {
        if self.is_trusted(peer) != Some(true) {
            return Cow::Borrowed(peer);
        }
        let mut client = peer;
        for hop in forwarded.rsplit(',').map(str::trim) {
            match self.is_trusted(hop) {
                Some(true) => client = hop,
                Some(false) => return Cow::Borrowed(hop),
                // Not an address: what came before it cannot be believed.
                None => break,
            }
        }
        Cow::Borrowed(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real() -> RealIp {
        RealIp::new(&[
            "10.0.0.0/8".into(),
            "192.0.2.1".into(),
            "2001:db8::/32".into(),
        ])
        .unwrap()
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        let r = real();
        assert_eq!(r.client("10.0.0.5", "203.0.113.9"), "203.0.113.9");
        assert_eq!(
            r.client("10.0.0.5", "198.51.100.1, 203.0.113.9, 10.1.1.1"),
            "203.0.113.9"
        );
        // Every hop trusted: the farthest one.
        assert_eq!(
            r.client("192.0.2.1", "2001:db8::1, 2001:db8::2"),
            "2001:db8::1"
        );
    }

    #[test]
    fn an_untrusted_peer_or_a_forged_header_is_not_believed() {
        let r = real();
        // The peer is no proxy of ours: its header is anyone's.
        assert_eq!(r.client("203.0.113.9", "10.0.0.1"), "203.0.113.9");
        // Garbage in the list stops the walk at the last trusted hop.
        assert_eq!(r.client("10.0.0.5", "198.51.100.1, unknown"), "10.0.0.5");
        assert_eq!(r.client("10.0.0.5", ""), "10.0.0.5");
    }

    #[test]
    fn bad_ranges_are_named() {
        let e = RealIp::new(&["10.0.0.0/33".into()]).unwrap_err();
        assert!(e.contains("10.0.0.0/33"), "{e}");
    }
}
