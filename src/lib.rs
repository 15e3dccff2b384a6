//! cerberus-agent: ship web access logs to the Cerberus analytics backend.
//!
//! The pipeline, one module per stage, each depending only on those listed
//! before it:
//!
//! - [`source`]: what the agent reads lines from, whatever the input kind
//!   (a line, its origin and its position; acknowledgements go back to it);
//! - [`tail`]: the file kind of source: follow log files through rotation as
//!   lines with byte offsets and file identity; it owns their checkpoints,
//!   moved by acknowledgements;
//! - [`parse`]: split lines into fields with pattern files
//!   ([`parse::PatternSet`]), and read their timestamps;
//! - [`pseudonymise`]: normalise and HMAC client IPs as the middleware does;
//! - [`event`]: build the backend's event JSON from the fields;
//! - [`pipeline`]: the per-line stage (pattern choice and detection, parse,
//!   event), shared by the agent and `check`;
//! - [`deliver`]: where events go and when they count as delivered:
//!   standard output, or the backend (batches over a WebSocket).
//!
//! Around them: [`config`] layers the settings and [`plan`] turns them into
//! each component's options; [`agent`] is the loop that drives the stages;
//! [`check`], [`status`] and [`replay`] are commands; [`cli`] defines the flags;
//! [`metrics`] serves what the stages count; [`server_config`] reads the web
//! servers' own configs for their logs; [`privileges`] warns at start
//! about root and secrets others may read. Leaf modules
//! everyone may use: [`secret`] (values never printed), [`wake`] (the loop's
//! coalesced wake-ups), [`diagnostics`] (counters, rate-limited messages).
//!
//! Threads: one runs the agent's loop and owns the tailer, the pipeline and
//! the sink. The sender thread (a small tokio runtime) owns the backend
//! connection; the inotify thread and the signal thread only wake the loop.

pub mod agent;
pub mod check;
pub mod cli;
pub mod config;
pub mod container;
pub mod deliver;
pub mod diagnostics;
pub mod event;
pub mod journal;
pub mod metrics;
pub mod parse;
pub mod pipeline;
pub mod plan;
pub mod privileges;
pub mod pseudonymise;
pub mod replay;
pub mod secret;
pub mod server_config;
pub mod source;
pub mod status;
pub mod tail;
pub mod wake;
