//! Pseudonymise client IP addresses the way the backend expects.
//!
//! The middleware (`cerberus-core`) normalises an IP (strip white space and an
//! IPv6 zone id, canonical text per RFC 5952) and sends
//! `hex(HMAC-SHA256(secret_key, normalised_ip))`. Without a key it sends the
//! normalised IP in plain text. [`IpPseudonymiser`] does the same.
//!
//! An HMAC costs two SHA-256 compressions (the key's own two are done once,
//! when the pseudonymiser is made; `sha2` uses the CPU's SHA extensions
//! where it has them), plus parsing and printing the address. Real traffic
//! repeats client addresses, so answers are kept in a bounded cache keyed by
//! the address text as the log wrote it: a hit costs one hash of a short
//! string, no parsing. The cache is `quick_cache`'s S3-FIFO: addresses seen
//! once (scanners, the long tail of a busy public site) pass through a small
//! probation queue and do not push out the addresses that come back.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// How many addresses' digests the cache keeps. Each takes a slot of
/// about 88 bytes (address text, digest, bookkeeping), and a quarter as many
/// slots again remember evicted addresses: about 3 MiB when full. With
/// 100,000 client addresses drawn Zipf (s = 1), about nine lookups in ten
/// are hits (`benches/parts.rs`, `ip_hash/cached_zipf_100k`: 34 ns per
/// address against 250 ns for an HMAC; a hit, hex included, 14 ns).
pub(crate) const CACHE_CAPACITY: usize = 24 * 1024;

/// Addresses evicted but remembered (as a hash, in a slot as large as a
/// live entry), as a fraction of the capacity: one seen again soon goes
/// straight back among the hot ones.
const GHOST_ALLOCATION: f64 = 0.25;

/// The longest address text the cache takes as a key: a full IPv6 address.
/// Longer text (a zone id, garbage) is answered without the cache.
const KEY_MAX: usize = 39;

/// A cache key: address text as the log wrote it, stored inline (no
/// allocation per entry).
#[derive(Clone, PartialEq, Eq)]
struct AddressText {
    len: u8,
    bytes: [u8; KEY_MAX],
}

impl AddressText {
    fn new(text: &str) -> Option<Self> {
        let mut bytes = [0; KEY_MAX];
        bytes
            .get_mut(..text.len())?
            .copy_from_slice(text.as_bytes());
        Some(AddressText {
            len: text.len() as u8,
            bytes,
        })
    }

    fn text(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::hash::Hash for AddressText {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        LookUp(self.text()).hash(state);
    }
}

/// Looks an [`AddressText`] up by the borrowed text, without copying it.
#[derive(Hash)]
struct LookUp<'a>(&'a [u8]);

impl quick_cache::Equivalent<AddressText> for LookUp<'_> {
    fn equivalent(&self, key: &AddressText) -> bool {
        self.0 == key.text()
    }
}

/// Normalises an IP string as `cerberus_core.sanitization.normalize_ip` does.
///
/// Everything from the first `%` is dropped (the IPv6 zone id), white space is
/// trimmed, and an address that parses is printed canonically (IPv6
/// compressed, lower case; IPv4-mapped as `::ffff:1.2.3.4`, per RFC 5952).
/// A string that does not parse (`unknown`, `01.2.3.4`) is returned as it was
/// given, untrimmed, exactly like the Python original.
pub fn normalize_ip(raw: &str) -> Cow<'_, str> {
    let mut text = String::new();
    match write_normalised(raw, &mut text) {
        true => Cow::Owned(text),
        false => Cow::Borrowed(raw),
    }
}

/// Writes the normalised text of `raw` into `out` when it differs from
/// `raw`; false when `raw` is its own normalised text. Bare IPv4 text that
/// parses is canonical already (the parser takes no leading zeros), so the
/// common case prints nothing.
fn write_normalised(raw: &str, out: &mut String) -> bool {
    match parse_ip(raw) {
        None | Some((IpAddr::V4(_), true)) => false,
        Some((ip, _)) => {
            out.clear();
            let _ = write!(out, "{ip}");
            out != raw
        }
    }
}

/// The address `raw` names once its zone id and white space are gone, and
/// whether `raw` was that bare text (nothing to strip).
fn parse_ip(raw: &str) -> Option<(IpAddr, bool)> {
    let candidate = raw.split('%').next().unwrap_or(raw).trim();
    let ip = candidate.parse().ok()?;
    Some((ip, candidate.len() == raw.len()))
}

/// Turns raw client IPs into what the event's `remote_addr` carries.
pub struct IpPseudonymiser {
    /// The HMAC keyed once; cloned per address so the key schedule is not
    /// recomputed for every line.
    keyed: Option<Hmac<Sha256>>,
    /// Digests by address text, hex-encoded per use: a third less memory
    /// than keeping the hex, for 6 ns a line (`const_hex` encodes with SIMD;
    /// the `hex` crate took 21 ns).
    cache: quick_cache::unsync::Cache<AddressText, [u8; 32]>,
    /// The answer being returned, in hex.
    hex: [u8; 64],
    /// A canonical address being written.
    text: String,
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
        // Without a key there is nothing worth caching.
        let capacity = if keyed.is_some() { CACHE_CAPACITY } else { 1 };
        IpPseudonymiser {
            keyed,
            cache: address_cache(capacity),
            hex: [0; 64],
            text: String::with_capacity(48),
        }
    }

    /// True when addresses are hashed, false when they go out in plain text.
    pub fn hashes(&self) -> bool {
        self.keyed.is_some()
    }

    /// The value for `remote_addr` of a request from `raw_ip`.
    pub fn pseudonymise<'a>(&'a mut self, raw_ip: &'a str) -> &'a str {
        let Some(keyed) = &self.keyed else {
            return match write_normalised(raw_ip, &mut self.text) {
                true => &self.text,
                false => raw_ip,
            };
        };
        let digest = if let Some(digest) = self.cache.get(&LookUp(raw_ip.as_bytes())) {
            *digest
        } else {
            // Text that is no address ("unknown", "-") is hashed as given.
            let digest = match write_normalised(raw_ip, &mut self.text) {
                true => hmac(keyed, &self.text),
                false => hmac(keyed, raw_ip),
            };
            if let Some(key) = AddressText::new(raw_ip) {
                self.cache.insert(key, digest);
            }
            digest
        };
        // Two hex digits per byte always fit: 64 for 32.
        let _ = const_hex::encode_to_slice(digest, &mut self.hex);
        std::str::from_utf8(&self.hex).unwrap_or_default()
    }

    /// The value for `remote_addr` without consulting or filling the cache.
    pub fn compute(&self, raw_ip: &str) -> String {
        let normalised = normalize_ip(raw_ip);
        match &self.keyed {
            Some(keyed) => const_hex::encode(hmac(keyed, &normalised)),
            None => normalised.into_owned(),
        }
    }
}

/// The digest cache, holding `capacity` addresses.
fn address_cache(capacity: usize) -> quick_cache::unsync::Cache<AddressText, [u8; 32]> {
    let mut options = quick_cache::OptionsBuilder::new();
    options
        .estimated_items_capacity(capacity)
        .weight_capacity(capacity as u64)
        .ghost_allocation(GHOST_ALLOCATION);
    match options.build() {
        Ok(options) => quick_cache::unsync::Cache::with_options(
            options,
            quick_cache::UnitWeighter,
            quick_cache::DefaultHashBuilder::default(),
            quick_cache::unsync::DefaultLifecycle::default(),
        ),
        // Only an option out of its range fails, and these are constants.
        Err(_) => quick_cache::unsync::Cache::new(capacity),
    }
}

/// HMAC-SHA256 of `text` with the key `keyed` was made with.
fn hmac(keyed: &Hmac<Sha256>, text: &str) -> [u8; 32] {
    let mut mac = keyed.clone();
    mac.update(text.as_bytes());
    mac.finalize().into_bytes().into()
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
            let ip = format!("10.{}.{}.{}", i / 65536, i / 256 % 256, i % 256);
            let expected = p.compute(&ip);
            assert_eq!(p.pseudonymise(&ip), expected);
            assert_eq!(p.pseudonymise(&ip), expected);
        }
        assert!(p.cache.len() <= CACHE_CAPACITY);
    }

    #[test]
    fn every_spelling_gets_the_answer_of_its_normalised_text() {
        let spellings = [
            "1.2.3.4",
            " 1.2.3.4 ",
            "1.2.3.4%x",
            "::ffff:1.2.3.4",
            "::FFFF:1.2.3.4",
            "2001:DB8:0:0:0:0:0:1",
            "2001:db8::1",
            "fe80::1%eth0",
            "unknown",
            " unknown ",
            "01.2.3.4",
            "",
        ];
        for key in [Some("k"), None] {
            let mut p = IpPseudonymiser::new(key);
            // Twice: the second round answers from the cache.
            for _ in 0..2 {
                for raw in spellings {
                    let expected = p.compute(raw);
                    assert_eq!(p.pseudonymise(raw), expected, "{raw:?} with key {key:?}");
                }
            }
        }
        let mut p = IpPseudonymiser::new(Some("k"));
        let v4 = p.pseudonymise("1.2.3.4").to_owned();
        assert_ne!(
            p.pseudonymise("::ffff:1.2.3.4"),
            v4,
            "a mapped address is another text"
        );
        assert_eq!(p.pseudonymise("1.2.3.4 "), v4);
    }
}
