//! Parity with the Python middleware: every vector produced by the real
//! `cerberus-core` package must come out the same from the agent.

use crate::common;

use cerberus_agent::event::sanitize::sanitize;
use cerberus_agent::pseudonymise::{IpPseudonymiser, normalize_ip};

#[test]
fn every_hash_pii_vector_matches() {
    let vectors = common::read_jsonl(&common::vector_file("hash_pii.jsonl"));
    assert!(vectors.len() > 100, "expected the full vector set");
    for v in vectors {
        let input = v["input"].as_str().expect("input");
        let key = v["secret_key"].as_str().expect("secret_key");
        assert_eq!(
            normalize_ip(input),
            v["normalized"].as_str().unwrap(),
            "normalize_ip({input:?})"
        );
        let mut p = IpPseudonymiser::new(Some(key));
        assert_eq!(
            p.pseudonymise(input),
            v["hash"].as_str().unwrap(),
            "hash of {input:?} with {key:?}"
        );
        // And again, now from the cache.
        assert_eq!(p.pseudonymise(input), v["hash"].as_str().unwrap());
    }
}

#[test]
fn without_a_key_the_normalised_ip_goes_out() {
    for v in common::read_jsonl(&common::vector_file("hash_pii.jsonl")) {
        let input = v["input"].as_str().unwrap();
        let mut p = IpPseudonymiser::new(None);
        assert_eq!(p.pseudonymise(input), v["normalized"].as_str().unwrap());
    }
}

#[test]
fn every_sanitize_vector_matches() {
    let vectors = common::read_jsonl(&common::vector_file("sanitize.jsonl"));
    assert!(!vectors.is_empty());
    for v in vectors {
        let mut value = v["input"].clone();
        sanitize(&mut value);
        assert_eq!(value, v["sanitized"], "sanitize({})", v["input"]);
    }
}
