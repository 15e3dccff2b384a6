//! cerberus-agent: ship web access logs to the Cerberus analytics backend.
//!
//! The pipeline, one module per stage:
//!
//! - [`tail`]: read log files as lines with byte offsets and file identity;
//! - [`parse`]: split lines into fields with pattern files ([`parse::PatternSet`]);
//! - [`pseudonymise`]: normalise and HMAC client IPs as the middleware does;
//! - [`event`]: build the backend's event JSON from the fields;
//! - [`sink`]: deliver events (standard output for now).
//!
//! [`agent`] wires the stages; [`check`] is the `check` command; [`config`]
//! and [`cli`] hold the settings; [`diagnostics`] counts and reports bad input.

pub mod agent;
pub mod batch;
pub mod check;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod diagnostics;
pub mod event;
pub mod parse;
pub mod pseudonymise;
pub mod secret_key;
pub mod send;
pub mod sink;
pub mod tail;
