//! The integration tests, one binary with a module per area (each module's
//! doc says what it covers); `common` holds the helpers they share.
//! Run one area with `cargo test --test suite AREA::`.

mod common;

mod agent;
mod bad_input;
mod cli;
mod config;
mod containers;
mod delivery;
mod escaping;
mod follow;
mod journal;
mod kubernetes;
mod layering;
mod metrics;
mod operator;
mod reload;
mod samples;
mod server_config;
mod system;
mod tail;
mod tail_model;
mod vectors;
