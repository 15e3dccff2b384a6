//! Settings, layered: defaults < config file < `CERBERUS_*` environment <
//! command-line flags.
//!
//! The config file is TOML (`/etc/cerberus/agent.toml` when present, or
//! `--config`). Environment variables are the keys upper-cased behind
//! `CERBERUS_` (`CERBERUS_WS_URL`, `CERBERUS_SECRET_KEY`; lists
//! comma-separated). Unknown keys and bad values are errors that name the
//! key; the binary exits with status 2 on them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::{CommonArgs, RunArgs};

/// The config file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/cerberus/agent.toml";
/// Where user pattern files are looked for by default.
pub const DEFAULT_PATTERN_DIR: &str = "/etc/cerberus/patterns.d";
/// Where checkpoints live by default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cerberus-agent";
/// Longest line kept whole by default.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// A value that must never be printed (token, secret key).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Every setting, after layering.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Log files or globs to follow.
    #[serde(default)]
    pub log: Vec<String>,
    /// Pattern name, pattern file path, or `auto`.
    #[serde(default = "default_format")]
    pub format: String,
    pub ws_url: Option<String>,
    pub token: Option<Secret>,
    pub client_id: Option<String>,
    pub secret_key: Option<Secret>,
    pub backend_url: Option<String>,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_pattern_dirs")]
    pub pattern_dirs: Vec<PathBuf>,
    /// Send sanitised query parameters instead of dropping query strings.
    #[serde(default)]
    pub query_params: bool,
    /// `http` or `https`: overrides the pattern's default scheme for lines
    /// that do not log it.
    pub default_scheme: Option<String>,
    /// Debug logging (`CERBERUS_DEBUG=true|1|yes`, as the middleware reads it).
    #[serde(default)]
    pub debug: bool,
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Print events instead of sending them.
    #[serde(default)]
    pub stdout: bool,
    /// Files without a checkpoint start at their beginning.
    #[serde(default)]
    pub from_beginning: bool,
    /// The exchange with the backend: `batch` or `single`.
    #[serde(default)]
    pub wire: crate::send::wire::Wire,
    /// A batch closes at this many events…
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// …or this many bytes…
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// …or when it has been open this long.
    #[serde(default = "default_batch_linger_ms")]
    pub batch_linger_ms: u64,
    /// Messages sent and not yet acknowledged, at most (default: 8 batches
    /// in `batch`, 256 events in `single`).
    pub max_in_flight: Option<usize>,
    /// A message not acknowledged within this is sent again on a new
    /// connection.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// Extra CA certificates (PEM) trusted for wss://, besides the system's.
    pub tls_ca_file: Option<PathBuf>,
    /// Verify the backend's certificate. Turning it off is for tests only.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// With backend_url and no secret_key: wait for the key (true), or send
    /// plain IPs with a warning when it cannot be fetched (false).
    #[serde(default = "default_true")]
    pub wait_for_secret_key: bool,
    /// At SIGTERM, how long to wait for acknowledgements of what is in
    /// flight.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
}

fn default_batch_max_events() -> usize {
    crate::batch::BatchLimits::default().max_events
}
fn default_batch_max_bytes() -> usize {
    crate::batch::BatchLimits::default().max_bytes
}
fn default_batch_linger_ms() -> u64 {
    crate::batch::BatchLimits::default().linger.as_millis() as u64
}
fn default_ack_timeout_ms() -> u64 {
    10_000
}
fn default_true() -> bool {
    true
}
fn default_shutdown_timeout_ms() -> u64 {
    10_000
}

fn default_format() -> String {
    "auto".into()
}
fn default_state_dir() -> PathBuf {
    DEFAULT_STATE_DIR.into()
}
fn default_pattern_dirs() -> Vec<PathBuf> {
    vec![DEFAULT_PATTERN_DIR.into()]
}
fn default_max_line_bytes() -> usize {
    DEFAULT_MAX_LINE_BYTES
}

/// A configuration problem; the message names the key and what is expected.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub fn new(msg: impl Into<String>) -> Self {
        ConfigError(msg.into())
    }
}

/// The layers besides defaults, gathered from the process.
#[derive(Debug, Default)]
pub struct Layers {
    /// The config file, if one is to be read, and whether it must exist.
    pub file: Option<(PathBuf, bool)>,
    /// `CERBERUS_*` variables (the full names).
    pub env: HashMap<String, String>,
    /// Flags that were given, as key → value.
    pub flags: Vec<(&'static str, FlagValue)>,
}

/// A flag's value, typed as the setting it overrides.
#[derive(Debug, Clone)]
pub enum FlagValue {
    Str(String),
    Bool(bool),
    Int(u64),
    List(Vec<String>),
}

/// Environment variables that are not settings keys.
const NOT_SETTINGS: &[&str] = &["CERBERUS_CONFIG"];

impl Layers {
    /// Layers from the real environment and the parsed flags.
    pub fn from_process(common: &CommonArgs, run: Option<&RunArgs>) -> Self {
        let env = std::env::vars()
            .filter(|(k, _)| k.starts_with("CERBERUS_"))
            .collect();
        Self::new(common, run, env)
    }

    /// Layers from given environment variables and flags (tests use this).
    pub fn new(common: &CommonArgs, run: Option<&RunArgs>, env: HashMap<String, String>) -> Self {
        let file = match &common.config {
            Some(p) => Some((p.clone(), true)),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                Some((PathBuf::from(DEFAULT_CONFIG_FILE), false))
            }
            None => None,
        };
        let mut flags: Vec<(&'static str, FlagValue)> = Vec::new();
        if !common.pattern_dirs.is_empty() {
            let dirs = common.pattern_dirs.iter().map(|p| p.display().to_string());
            flags.push(("pattern_dirs", FlagValue::List(dirs.collect())));
        }
        if let Some(k) = &common.secret_key {
            flags.push(("secret_key", FlagValue::Str(k.clone())));
        }
        if common.query_params {
            flags.push(("query_params", FlagValue::Bool(true)));
        }
        if let Some(run) = run {
            if !run.logs.is_empty() {
                flags.push(("log", FlagValue::List(run.logs.clone())));
            }
            let strings = [
                ("format", &run.format),
                ("ws_url", &run.ws_url),
                ("token", &run.token),
                ("client_id", &run.client_id),
                ("backend_url", &run.backend_url),
            ];
            for (key, value) in strings {
                if let Some(v) = value {
                    flags.push((key, FlagValue::Str(v.clone())));
                }
            }
            if let Some(d) = &run.state_dir {
                flags.push(("state_dir", FlagValue::Str(d.display().to_string())));
            }
            if run.stdout {
                flags.push(("stdout", FlagValue::Bool(true)));
            }
            if run.from_beginning {
                flags.push(("from_beginning", FlagValue::Bool(true)));
            }
            if let Some(n) = run.max_line_bytes {
                flags.push(("max_line_bytes", FlagValue::Int(n as u64)));
            }
            if let Some(w) = &run.wire {
                flags.push(("wire", FlagValue::Str(w.clone())));
            }
        }
        Layers { file, env, flags }
    }

    /// Layers the settings and checks them.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some((path, required)) = &self.file {
            if *required && !path.exists() {
                return Err(ConfigError::new(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(
                config::File::from(path.as_path())
                    .format(config::FileFormat::Toml)
                    .required(*required),
            );
        }
        let env: HashMap<String, String> = self
            .env
            .iter()
            .filter(|(k, _)| !NOT_SETTINGS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("CERBERUS")
                .prefix_separator("_")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("log")
                .with_list_parse_key("pattern_dirs")
                .source(Some(env)),
        );
        for (key, value) in &self.flags {
            let v: config::Value = match value {
                FlagValue::Str(s) => s.clone().into(),
                FlagValue::Bool(b) => (*b).into(),
                FlagValue::Int(n) => (*n).into(),
                FlagValue::List(l) => l.clone().into(),
            };
            builder = builder
                .set_override(*key, v)
                .map_err(|e| ConfigError::new(e.to_string()))?;
        }
        let layered = builder
            .build()
            .map_err(|e| ConfigError::new(e.to_string()))?;
        let settings: Settings = layered
            .try_deserialize()
            .map_err(|e| ConfigError::new(explain(e)))?;
        settings.validate()?;
        Ok(settings)
    }
}

fn explain(e: config::ConfigError) -> String {
    let text = e.to_string();
    if text.contains("unknown field") {
        format!("{text} (check the spelling; README.md lists every key)")
    } else {
        text
    }
}

impl Settings {
    /// Checks values that deserialise but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.ws_url
            && !(url.starts_with("ws://") || url.starts_with("wss://"))
        {
            return Err(ConfigError::new(format!(
                "key `ws_url` is {url:?}: expected a URL starting with wss:// or ws://"
            )));
        }
        if let Some(url) = &self.backend_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::new(format!(
                "key `backend_url` is {url:?}: expected a URL starting with https:// or http://"
            )));
        }
        if let Some(s) = &self.default_scheme
            && s != "http"
            && s != "https"
        {
            return Err(ConfigError::new(format!(
                "key `default_scheme` is {s:?}: expected \"http\" or \"https\""
            )));
        }
        if self.max_line_bytes < 256 {
            return Err(ConfigError::new(format!(
                "key `max_line_bytes` is {}: expected at least 256",
                self.max_line_bytes
            )));
        }
        for (key, value) in [
            ("batch_max_events", self.batch_max_events as u64),
            ("batch_max_bytes", self.batch_max_bytes as u64),
            ("max_in_flight", self.max_in_flight.unwrap_or(1) as u64),
            ("ack_timeout_ms", self.ack_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::new(format!(
                    "key `{key}` is 0: expected at least 1"
                )));
            }
        }
        if self.format.is_empty() {
            return Err(ConfigError::new(
                "key `format` is empty: expected a pattern name, a pattern file, or \"auto\"",
            ));
        }
        Ok(())
    }

    /// Messages in flight at most.
    pub fn window(&self) -> usize {
        self.max_in_flight.unwrap_or(match self.wire {
            crate::send::wire::Wire::Batch => 8,
            crate::send::wire::Wire::Single => 256,
        })
    }

    /// When batches close.
    pub fn batch_limits(&self) -> crate::batch::BatchLimits {
        crate::batch::BatchLimits {
            max_events: self.batch_max_events,
            max_bytes: self.batch_max_bytes,
            linger: std::time::Duration::from_millis(self.batch_linger_ms),
        }
    }

    /// What the event builder needs from the settings.
    pub fn event_options(&self) -> crate::event::EventOptions {
        crate::event::EventOptions {
            identity: crate::event::Identity {
                token: self
                    .token
                    .as_ref()
                    .map(|t| t.expose().to_owned())
                    .unwrap_or_default(),
                client_id: self.client_id.clone().unwrap_or_default(),
            },
            secret_key: self.secret_key.clone(),
            query_params: self.query_params,
            default_https: self.default_scheme.as_deref().map(|s| s == "https"),
        }
    }
}
