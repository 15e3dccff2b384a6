//! Pseudonymise client IP addresses the way the backend expects.
//!
//! The middleware (`cerberus-core`) normalises an IP (strip white space and an
//! IPv6 zone id, canonical text per RFC 5952) and sends
//! `hex(HMAC-SHA256(secret_key, normalised_ip))`. Without a key it sends the
//! normalised IP in plain text. [`IpPseudonymiser`] does the same, and keeps a
//! bounded cache of recent results because real traffic repeats client IPs
//! heavily and an HMAC costs two SHA-256 compressions.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// How many distinct IPs the cache remembers before it starts over.
const CACHE_CAPACITY: usize = 4096;

/// Normalises an IP string as `cerberus_core.sanitization.normalize_ip` does.
///
/// Everything from the first `%` is dropped (the IPv6 zone id), white space is
/// trimmed, and an address that parses is printed canonically (IPv6
/// compressed, lower case; IPv4-mapped as `::ffff:1.2.3.4`, per RFC 5952).
/// A string that does not parse (`unknown`, `01.2.3.4`) is returned as it was
/// given, untrimmed, exactly like the Python original.
pub fn normalize_ip(raw: &str) -> Cow<'_, str> {
    let candidate = raw.split('%').next().unwrap_or(raw).trim();
    match candidate.parse::<IpAddr>() {
        Ok(ip) => {
            let canonical = ip.to_string();
            if canonical == raw {
                Cow::Borrowed(raw)
            } else {
                Cow::Owned(canonical)
            }
        }
        Err(_) => Cow::Borrowed(raw),
    }
}

/// Turns raw client IPs into what the event's `remote_addr` carries.
pub struct IpPseudonymiser {
    /// The HMAC keyed once; cloned per address so the key schedule is not
    /// recomputed for every line.
    keyed: Option<Hmac<Sha256>>,
    cache: HashMap<Box<str>, Box<str>>,
}

impl IpPseudonymiser {
    /// A pseudonymiser that hashes with `secret_key`, or that passes
    /// normalised IPs through in plain text when there is none.
    pub fn new(secret_key: Option<&str>) -> Self {
        let keyed = secret_key.map(|key| {
            // HMAC accepts keys of any length, so this cannot fail.
            <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes())
                .expect("HMAC-SHA256 accepts keys of any length")
        });
        IpPseudonymiser {
            keyed,
            cache: HashMap::new(),
        }
    }

    /// True when addresses are hashed, false when they go out in plain text.
    pub fn hashes(&self) -> bool {
        self.keyed.is_some()
    }

    /// The value for `remote_addr` of a request from `raw_ip`.
    pub fn pseudonymise(&mut self, raw_ip: &str) -> &str {
        // A lookup then an insert costs a second hash of the key only on a
        // miss, which is the rare case in real traffic.
        if !self.cache.contains_key(raw_ip) {
            if self.cache.len() >= CACHE_CAPACITY {
                // Starting over is cheaper than LRU bookkeeping on every hit,
                // and a busy server's working set refills it within moments.
                self.cache.clear();
            }
            let value = self.compute(raw_ip);
            self.cache.insert(raw_ip.into(), value.into_boxed_str());
        }
        self.cache.get(raw_ip).map(|v| &**v).unwrap_or_default()
    }

    /// The value for `remote_addr` without consulting or filling the cache.
    pub fn compute(&self, raw_ip: &str) -> String {
        let normalised = normalize_ip(raw_ip);
        match &self.keyed {
            Some(keyed) => {
                let mut mac = keyed.clone();
                mac.update(normalised.as_bytes());
                hex::encode(mac.finalize().into_bytes())
            }
            None => normalised.into_owned(),
        }
    }
}

impl std::fmt::Debug for IpPseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key, nor cached addresses (they are personal data).
        f.debug_struct("IpPseudonymiser")
            .field("hashes", &self.hashes())
            .field("cached", &self.cache.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_ids_and_spaces_are_stripped_only_from_addresses() {
        assert_eq!(normalize_ip("fe80::1%eth0"), "fe80::1");
        assert_eq!(normalize_ip(" 10.0.0.1 "), "10.0.0.1");
        assert_eq!(normalize_ip(" not-an-ip "), " not-an-ip ");
        assert_eq!(normalize_ip("::ffff:1.2.3.4"), "::ffff:1.2.3.4");
    }

    #[test]
    fn cache_gives_the_same_answer_as_computing() {
        let mut p = IpPseudonymiser::new(Some("k"));
        for i in 0..(CACHE_CAPACITY * 2 + 7) {
            let ip = format!("10.0.{}.{}", i / 256 % 256, i % 256);
            let expected = p.compute(&ip);
            assert_eq!(p.pseudonymise(&ip), expected);
            assert_eq!(p.pseudonymise(&ip), expected);
        }
        assert!(p.cache.len() <= CACHE_CAPACITY);
    }
}
