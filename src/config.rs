//! Settings, layered: defaults < config file < `CERBERUS_*` environment <
//! command-line flags.
//!
//! The config file is TOML (`/etc/cerberus/agent.toml` when present, or
//! `--config`). Environment variables are the keys upper-cased behind
//! `CERBERUS_` (`CERBERUS_WS_URL`, `CERBERUS_SECRET_KEY`; lists
//! comma-separated). Unknown keys and bad values are errors that name the
//! key; the binary exits with status 2 on them.
//!
//! Settings are typed here ([`Format`], [`Scheme`], [`Wire`], durations in
//! milliseconds); what each component needs is worked out from them once,
//! in `plan.rs`. The flags' layer is the flags themselves, serialised
//! under their own field names, so a key is named once, in `cli.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::Secret;

/// The config file read when `--config` is not given, if it exists.
pub(crate) const DEFAULT_CONFIG_FILE: &str = "/etc/cerberus/agent.toml";
/// Where user pattern files are looked for by default.
pub(crate) const DEFAULT_PATTERN_DIR: &str = "/etc/cerberus/patterns.d";
/// Where checkpoints live by default.
pub(crate) const DEFAULT_STATE_DIR: &str = "/var/lib/cerberus-agent";
/// Longest line kept whole by default, and the most it may be set to.
pub(crate) const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;
pub(crate) const MAX_LINE_BYTES_LIMIT: usize = 16 * 1024 * 1024;
/// Files open at once, by default.
pub(crate) const DEFAULT_MAX_OPEN_FILES: usize = 256;
/// When a batch closes, by default.
pub(crate) const DEFAULT_BATCH_MAX_EVENTS: usize = 1000;
pub(crate) const DEFAULT_BATCH_MAX_BYTES: usize = 128 * 1024;
pub(crate) const DEFAULT_BATCH_LINGER_MS: u64 = 2;
/// permessage-deflate's level and window, by default, and what they may be
/// set to.
pub(crate) const DEFAULT_COMPRESSION_WINDOW_BITS: u8 = 15;
pub(crate) const COMPRESSION_LEVELS: std::ops::RangeInclusive<u32> = 1..=9;
pub(crate) const COMPRESSION_WINDOW_BITS: std::ops::RangeInclusive<u8> = 9..=15;
/// Refusals of one event before it is set aside, by default.
pub(crate) const DEFAULT_DEAD_LETTER_AFTER: u32 = 3;

// These are the components' own defaults too (`BatchLimits`,
// `DeflateSettings`, `TailOptions`, `RefusalPolicy`): the plan's tests hold
// them equal, so that config knows no component.

/// One `[[logs]]` table: a path or glob with its own format and excludes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogTable {
    pub path: String,
    /// This log's format; the `format` setting when absent.
    pub format: Option<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The records its lines are wrapped in; the `wrapper` setting when
    /// absent.
    pub wrapper: Option<WrapperSetting>,
    /// The container outputs read; the `streams` setting when absent.
    pub streams: Option<StreamsSetting>,
}

/// One `[[journal]]` table: the entries of a unit or of a program in the
/// systemd journal, with their own format.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JournalTable {
    /// `_SYSTEMD_UNIT` (`gunicorn.service`).
    pub unit: Option<String>,
    /// `SYSLOG_IDENTIFIER` (`nginx`).
    pub identifier: Option<String>,
    /// Their format; `auto` (detected) when absent.
    pub format: Option<String>,
}

/// A setting that is one of a fixed set of names (`wire = "batch"`).
pub(crate) trait Choice: Sized + Copy + 'static {
    /// Every name, with its value.
    const CHOICES: &'static [(&'static str, Self)];

    /// The value a name stands for (any case).
    fn from_name(name: &str) -> Option<Self> {
        Self::CHOICES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// Every name, in order.
    fn names() -> impl Iterator<Item = &'static str> {
        Self::CHOICES.iter().map(|(n, _)| *n)
    }
}

/// Declares a [`Choice`] setting: its names, and serde both ways through
/// them (flags serialise under their setting's key, see `crate::cli`).
macro_rules! choice {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl Choice for $name {
            const CHOICES: &'static [(&'static str, Self)] = &[$(($text, $name::$variant)),+];
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let name = Self::CHOICES
                    .iter()
                    .find(|(_, v)| v == self)
                    .map_or("", |(n, _)| n);
                s.serialize_str(name)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                one_of(d)
            }
        }
    };
}

choice! {
    /// How the agent's own messages are written on stderr.
    LogFormat {
        /// One readable line per message (journald adds the time).
        #[default]
        Text = "text",
        /// One JSON object per message, with its time and level.
        Json = "json",
    }
}

choice! {
    /// Where the event's client address comes from.
    ClientIpFrom {
        /// The address the server saw (`$remote_addr`, `%h`).
        #[default]
        RemoteAddr = "remote_addr",
        /// The X-Forwarded-For header, behind `trusted_proxies`.
        XForwardedFor = "x_forwarded_for",
    }
}

choice! {
    /// `http` or `https`, for lines that do not log the scheme.
    Scheme {
        #[default]
        Http = "http",
        Https = "https",
    }
}

choice! {
    /// The exchange with the backend (see docs/protocol.md).
    WireSetting {
        /// One acknowledgement per batch of events.
        #[default]
        Batch = "batch",
        /// One event per message, as the middleware sends them.
        Single = "single",
    }
}

choice! {
    /// Compression on the WebSocket.
    CompressionSetting {
        /// Offer permessage-deflate; use it when the backend accepts.
        #[default]
        Deflate = "deflate",
        /// Offer nothing: every message goes out as it is.
        Off = "off",
    }
}

choice! {
    /// The records a log's lines are wrapped in (container runtimes' logs).
    WrapperSetting {
        /// Decided from each file's first record.
        #[default]
        Auto = "auto",
        /// containerd, CRI-O, podman's `k8s-file`: `TIME STREAM P|F LINE`.
        Cri = "cri",
        /// Docker's `json-file`: `{"log":…,"stream":…,"time":…}`.
        Docker = "docker",
        /// The lines are the server's own.
        None = "none",
    }
}

choice! {
    /// Which of a container's outputs are read.
    StreamsSetting {
        /// Standard output, where servers write access logs.
        #[default]
        Stdout = "stdout",
        Stderr = "stderr",
        Both = "both",
    }
}

/// Every setting, after layering.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Log files or globs to follow, each optionally `PATH=FORMAT`.
    #[serde(default)]
    pub log: Vec<String>,
    /// Logs with settings of their own (`[[logs]]` tables).
    #[serde(default)]
    pub logs: Vec<LogTable>,
    /// Globs of files never to follow, even when a `log` glob matches them.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Folders that symbolic links a glob finds may point into, besides the
    /// glob's own folder (`/var/log/pods` for `/var/log/containers/*.log`).
    #[serde(default)]
    pub follow_symlinks_into: Vec<PathBuf>,
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
    /// An nginx config whose access logs are followed, each with its
    /// log_format (besides `log` and `[[logs]]`).
    pub nginx_conf: Option<PathBuf>,
    /// An Apache config whose CustomLogs are followed, each with its
    /// LogFormat.
    pub apache_conf: Option<PathBuf>,
    /// Units whose journal entries are read, each optionally
    /// `UNIT=FORMAT`.
    #[serde(default)]
    pub journal_unit: Vec<String>,
    /// Programs (`SYSLOG_IDENTIFIER`) whose journal entries are read, each
    /// optionally `NAME=FORMAT`.
    #[serde(default)]
    pub journal_identifier: Vec<String>,
    /// Journal selections with settings of their own (`[[journal]]`).
    #[serde(default)]
    pub journal: Vec<JournalTable>,
    /// A journal folder that is not the system's (`journalctl
    /// --directory`).
    pub journal_directory: Option<PathBuf>,
    /// The records log lines are wrapped in: `auto`, `cri`, `docker` or
    /// `none`.
    #[serde(default)]
    pub wrapper: WrapperSetting,
    /// Which of a container's outputs are read: `stdout`, `stderr`, `both`.
    #[serde(default)]
    pub streams: StreamsSetting,
    /// The node's name, added to a container log's metadata (a DaemonSet
    /// sets `CERBERUS_NODE_NAME` from `spec.nodeName`).
    pub node_name: Option<String>,
    /// Send sanitised query parameters instead of dropping query strings.
    #[serde(default)]
    pub query_params: bool,
    /// `http` or `https`: overrides the pattern's default scheme for lines
    /// that do not log it.
    #[serde(default)]
    pub default_scheme: Option<Scheme>,
    /// `remote_addr` (default) or `x_forwarded_for`: the client behind the
    /// `trusted_proxies`, as nginx's realip module finds it.
    #[serde(default)]
    pub client_ip_from: ClientIpFrom,
    /// Proxies (addresses or CIDR ranges) whose X-Forwarded-For is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// A response header besides X-Cerberus-Metrics that carries custom
    /// metrics, in the servers' format strings.
    pub metrics_header: Option<String>,
    /// How the agent's own messages are written: `text` or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Debug logging (`CERBERUS_DEBUG=true|1|yes`, as the middleware reads it).
    #[serde(default)]
    pub debug: bool,
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Files open at once, at most; beyond it, idle files are closed (and
    /// opened again from their checkpoint when they grow).
    #[serde(default = "default_max_open_files")]
    pub max_open_files: usize,
    /// Print events instead of sending them.
    #[serde(default)]
    pub stdout: bool,
    /// Files without a checkpoint start at their beginning.
    #[serde(default)]
    pub from_beginning: bool,
    /// The exchange with the backend: `batch` or `single`.
    #[serde(default)]
    pub wire: WireSetting,
    /// A batch closes at this many events…
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// …or this many bytes…
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// …or when it has been open this long.
    #[serde(default = "default_batch_linger_ms")]
    pub batch_linger_ms: u64,
    /// Compression on the WebSocket: `deflate` (permessage-deflate, used
    /// when the backend accepts it) or `off`.
    #[serde(default)]
    pub compression: CompressionSetting,
    /// The compressor for `deflate`: unset, the agent's own (made for
    /// its JSON batches); 1 (fastest) to 9 (smallest), zlib's levels.
    pub compression_level: Option<u32>,
    /// The compression window for `deflate`, 2^N bytes: 9 to 15.
    #[serde(default = "default_compression_window_bits")]
    pub compression_window_bits: u8,
    /// Messages sent and not yet acknowledged, at most (default: 8 batches
    /// in `batch`; 1 event in `single`, whose replies name no event).
    pub max_in_flight: Option<usize>,
    /// The largest message the backend takes, when known: larger batches
    /// are sent in pieces. Without it, a limit is learnt from the backend.
    pub max_message_bytes: Option<usize>,
    /// An event the backend refuses this many times on its own, while it
    /// takes others, goes to the dead-letter file.
    #[serde(default = "default_dead_letter_after")]
    pub dead_letter_after: u32,
    /// The dead-letter file's size limit; once full, a refused event waits.
    #[serde(default = "default_dead_letter_max_bytes")]
    pub dead_letter_max_bytes: u64,
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
    /// Where `/metrics`, `/health` and `/ready` are served (`ADDR:PORT`);
    /// off when absent.
    pub metrics_addr: Option<String>,
    /// How long the backend may fail before `/health` turns 503.
    #[serde(default = "default_health_grace")]
    pub health_backend_grace_s: u64,
    /// How often a one-line status is logged, in seconds; 0 turns it off.
    #[serde(default = "default_status_interval")]
    pub status_interval_s: u64,
    /// At SIGTERM, how long to wait for acknowledgements of what is in
    /// flight.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
}

/// A value of a fixed set, named by the error when it is none of them.
fn one_of<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Choice,
{
    let text = String::deserialize(d)?;
    T::from_name(&text).ok_or_else(|| {
        let allowed: Vec<String> = T::names().map(|n| format!("\"{n}\"")).collect();
        serde::de::Error::custom(format!(
            "{text:?} is not allowed: expected one of {}",
            allowed.join(", ")
        ))
    })
}

fn default_batch_max_events() -> usize {
    DEFAULT_BATCH_MAX_EVENTS
}
fn default_batch_max_bytes() -> usize {
    DEFAULT_BATCH_MAX_BYTES
}
fn default_batch_linger_ms() -> u64 {
    DEFAULT_BATCH_LINGER_MS
}
fn default_compression_window_bits() -> u8 {
    DEFAULT_COMPRESSION_WINDOW_BITS
}
fn default_max_open_files() -> usize {
    DEFAULT_MAX_OPEN_FILES
}
fn default_dead_letter_after() -> u32 {
    DEFAULT_DEAD_LETTER_AFTER
}
fn default_dead_letter_max_bytes() -> u64 {
    64 << 20
}
fn default_ack_timeout_ms() -> u64 {
    10_000
}
fn default_health_grace() -> u64 {
    60
}
fn default_status_interval() -> u64 {
    60
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
pub struct ConfigError(pub String);

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
    /// Flags that were given, by setting key.
    pub flags: serde_json::Map<String, serde_json::Value>,
}

/// Environment variables of the agent that are not settings keys.
const NOT_SETTINGS: &[&str] = &["CERBERUS_CONFIG", "CERBERUS_LOG_FILTER"];

/// The settings key a `CERBERUS_*` variable sets, if it sets one.
fn env_key(var: &str) -> Option<String> {
    let key = var.strip_prefix("CERBERUS_")?.to_ascii_lowercase();
    settings_keys().contains(&key.as_str()).then_some(key)
}

/// The keys of [`Settings`], as serde knows them (its field names: they
/// are written once, on the struct).
pub fn settings_keys() -> &'static [&'static str] {
    /// A deserializer that only listens to which fields are asked for.
    struct Fields(Option<&'static [&'static str]>);
    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("only fields are listed"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(serde::de::Error::custom("only fields are listed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    static KEYS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut fields = Fields(None);
        let _ = Settings::deserialize(&mut fields);
        fields.0.unwrap_or(&[])
    })
}

impl Layers {
    /// Layers from the real environment, the config file named (or the
    /// default one), and the flags given, by settings key.
    pub(crate) fn from_process(
        config: Option<&Path>,
        flags: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        let env = std::env::vars()
            .filter(|(k, _)| k.starts_with("CERBERUS_"))
            .collect();
        Self::new(config, flags, env)
    }

    /// Layers from given environment variables and flags (tests use this).
    pub fn new(
        config: Option<&Path>,
        flags: serde_json::Map<String, serde_json::Value>,
        env: HashMap<String, String>,
    ) -> Self {
        let file = match config {
            Some(p) => Some((p.to_owned(), true)),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                Some((PathBuf::from(DEFAULT_CONFIG_FILE), false))
            }
            None => None,
        };
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
            .filter(|(k, _)| env_key(k).is_some())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("CERBERUS")
                .prefix_separator("_")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("log")
                .with_list_parse_key("journal_unit")
                .with_list_parse_key("journal_identifier")
                .with_list_parse_key("exclude")
                .with_list_parse_key("follow_symlinks_into")
                .with_list_parse_key("pattern_dirs")
                .with_list_parse_key("trusted_proxies")
                .source(Some(env)),
        );
        if !self.flags.is_empty() {
            let flags = config::Config::try_from(&self.flags)
                .map_err(|e| ConfigError::new(format!("flags: {e}")))?;
            builder = builder.add_source(flags);
        }
        let layered = builder
            .build()
            .map_err(|e| ConfigError::new(self.name_the_variable(e.to_string())))?;
        let settings: Settings = layered
            .try_deserialize()
            .map_err(|e| ConfigError::new(self.name_the_variable(explain(e))))?;
        settings
            .validate()
            .map_err(|e| ConfigError::new(self.name_the_variable(e.0)))?;
        Ok(settings)
    }

    /// `CERBERUS_*` variables that are no setting of this agent (other
    /// Cerberus tools share the prefix): ignored, and worth a warning.
    pub fn unknown_env(&self) -> Vec<&str> {
        let mut unknown: Vec<&str> = self
            .env
            .keys()
            .map(String::as_str)
            .filter(|k| !NOT_SETTINGS.contains(k) && env_key(k).is_none())
            .collect();
        unknown.sort();
        unknown
    }

    /// A message about key `k` that came from the environment names the
    /// variable too (`CERBERUS_WIRE`), unless a flag set the key.
    fn name_the_variable(&self, message: String) -> String {
        let from_env = self.env.keys().find(|var| {
            env_key(var).is_some_and(|key| {
                message.contains(&format!("`{key}`")) && !self.flags.contains_key(&key)
            })
        });
        match from_env {
            Some(var) => format!("{message} (set by the environment variable {var})"),
            None => message,
        }
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
        if !(256..=MAX_LINE_BYTES_LIMIT).contains(&self.max_line_bytes) {
            return Err(ConfigError::new(format!(
                "key `max_line_bytes` is {}: expected 256 to {MAX_LINE_BYTES_LIMIT}",
                self.max_line_bytes
            )));
        }
        for (key, value) in [
            ("batch_max_events", self.batch_max_events as u64),
            ("batch_max_bytes", self.batch_max_bytes as u64),
            ("max_in_flight", self.max_in_flight.unwrap_or(1) as u64),
            ("ack_timeout_ms", self.ack_timeout_ms),
            ("dead_letter_after", u64::from(self.dead_letter_after)),
            ("max_open_files", self.max_open_files as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::new(format!(
                    "key `{key}` is 0: expected at least 1"
                )));
            }
        }
        if let Some(max) = self.max_message_bytes
            && max < 1024
        {
            return Err(ConfigError::new(format!(
                "key `max_message_bytes` is {max}: expected at least 1024 (an event must fit)"
            )));
        }
        if let Some(level) = self.compression_level
            && !COMPRESSION_LEVELS.contains(&level)
        {
            return Err(ConfigError::new(format!(
                "key `compression_level` is {level}: expected 1 (fastest) to 9 (smallest), or unset for the agent's own compressor"
            )));
        }
        if !COMPRESSION_WINDOW_BITS.contains(&self.compression_window_bits) {
            return Err(ConfigError::new(format!(
                "key `compression_window_bits` is {}: expected 9 to 15 (a window of 2^N bytes)",
                self.compression_window_bits
            )));
        }
        if self.format.is_empty() || self.logs.iter().any(|l| l.format.as_deref() == Some("")) {
            return Err(ConfigError::new(
                "key `format` is empty: expected a pattern name, a pattern file, or \"auto\"",
            ));
        }
        Ok(())
    }
}
