//! Plan: what the agent will do, worked out once from the settings.
//!
//! [`crate::config`] gives typed [`Settings`] (what the operator wrote);
//! [`Plan::from_settings`] turns them into each component's own options
//! (the tailer's, the event builder's, the sink's, the key source) and
//! checks everything that can be checked before any file is opened: the
//! pattern files compile, `--format` names a pattern, TLS can be set up.
//! Components take their options from here and never read settings
//! themselves, so a reload can build a new plan and apply the difference.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{
    ClientIpFrom, CompressionSetting, ConfigError, Scheme, Settings, StreamsSetting, WireSetting,
    WrapperSetting,
};
use crate::container::{Streams, Unwrapping, Wrapper};
use crate::deliver::backend::batch::BatchLimits;
use crate::deliver::backend::compression::DeflateSettings;
use crate::deliver::backend::dead_letter::DeadLetters;
use crate::deliver::backend::secret_key::Trust;
use crate::deliver::backend::{RefusalPolicy, SenderConfig, Wire};
use crate::event::real_ip::RealIp;
use crate::event::{EventOptions, Identity};
use crate::journal::{JournalOptions, Selection};
use crate::parse::server_format::Server;
use crate::parse::{Format, Pattern, PatternError, PatternSet};
use crate::secret::Secret;
use crate::tail::TailOptions;

/// How the agent runs, beyond the settings (flags of the run itself).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunMode {
    /// Read to the end of the files, deliver, and exit.
    pub once: bool,
    /// Neither resume from nor save checkpoints.
    pub no_checkpoints: bool,
    /// With `once`: give up after this long.
    pub once_timeout: Option<Duration>,
}

/// Where the key for `remote_addr` comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    /// Configured: hash with it.
    Configured(Secret),
    /// Fetched from the backend before any event is built.
    Fetch {
        backend_url: String,
        token: Option<Secret>,
        /// Whom the fetch trusts (the WebSocket's settings).
        trust: Trust,
        /// Wait (retrying) for the key, or send plain IPs when it cannot
        /// be fetched.
        wait: bool,
    },
    /// No key: client IPs go out normalised but in plain text.
    None,
}

/// Where events go.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// JSON lines on standard output.
    Stdout,
    /// The backend, in batches.
    Backend {
        sender: Box<SenderConfig>,
        batches: BatchLimits,
    },
}

impl Delivery {
    /// Whether `other` delivers the same way, so a reload can keep the
    /// connection. With TLS it never is: the certificate files may have
    /// changed, and a reload is how an operator makes them count.
    pub(crate) fn same_as(&self, other: &Delivery) -> bool {
        match (self, other) {
            (Delivery::Stdout, Delivery::Stdout) => true,
            (
                Delivery::Backend { sender, batches },
                Delivery::Backend {
                    sender: s2,
                    batches: b2,
                },
            ) => {
                let (a, b) = (&**sender, &**s2);
                batches == b2
                    && a.url == b.url
                    && a.token == b.token
                    && a.client_id == b.client_id
                    && a.wire == b.wire
                    && a.window == b.window
                    && a.ack_timeout == b.ack_timeout
                    && a.ping_interval == b.ping_interval
                    && a.connect_timeout == b.connect_timeout
                    && a.backoff_min == b.backoff_min
                    && a.backoff_max == b.backoff_max
                    && a.compression == b.compression
                    && a.refusals == b.refusals
                    && a.tls.is_none()
                    && b.tls.is_none()
            }
            _ => false,
        }
    }
}

/// A path or glob to follow and the pattern its files are read with.
#[derive(Debug, Clone)]
pub struct LogSource {
    pub path: String,
    /// `None`: detected per file from its first lines (`auto`).
    pub pattern: Option<Arc<Pattern>>,
    /// How its files' records are unwrapped (container runtimes' logs).
    pub unwrapping: Unwrapping,
}

/// What to read from the systemd journal, and each selection's pattern.
#[derive(Debug, Clone)]
pub struct JournalPlan {
    pub options: JournalOptions,
    /// Per selection (in `options.selections` order); `None`: detected.
    pub formats: Vec<Option<Arc<Pattern>>>,
}

/// Everything the agent needs to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub patterns: PatternSet,
    /// What to follow, in the order given (the first that names a file
    /// decides its pattern).
    pub sources: Vec<LogSource>,
    pub tail: TailOptions,
    /// Journal entries to read, if any are selected.
    pub journal: Option<JournalPlan>,
    /// Where checkpoints are kept; `None` with `--no-checkpoints`.
    pub state_dir: Option<PathBuf>,
    /// What the events carry besides the pseudonymised address; the key
    /// that pseudonymises is how `key` says to obtain it, decided by the
    /// agent at start (and kept by it: the plan is not changed).
    pub event: EventPlan,
    pub key: KeySource,
    pub delivery: Delivery,
    /// Read to the end, deliver, and stop.
    pub once: bool,
    /// With `once`: give up after this long.
    pub once_timeout: Option<Duration>,
    /// At shutdown, how long to wait for what is in flight.
    pub shutdown_timeout: Duration,
    /// Where `/metrics`, `/health` and `/ready` are served, if anywhere.
    pub metrics_addr: Option<String>,
    /// How long the backend may fail before `/health` says so.
    pub health_grace: Duration,
    /// How often a status line is logged; `None`: never.
    pub status_interval: Option<Duration>,
}

impl Plan {
    /// The plan for running the agent.
    pub fn from_settings(settings: &Settings, mode: RunMode) -> anyhow::Result<Plan> {
        let journal_selected = !(settings.journal_unit.is_empty()
            && settings.journal_identifier.is_empty()
            && settings.journal.is_empty());
        if settings.log.is_empty()
            && settings.logs.is_empty()
            && !journal_selected
            && server_configs(settings).is_empty()
        {
            return Err(ConfigError::new(
                "no log files given: use --log PATH (or `log` in the config file), --nginx-conf FILE, --apache-conf FILE or --journal-unit UNIT",
            )
            .into());
        }
        let mut patterns = load_patterns(settings)?;
        let sources = match settings.log.is_empty()
            && settings.logs.is_empty()
            && journal_selected
            && settings.nginx_conf.is_none()
            && settings.apache_conf.is_none()
        {
            // The journal alone: no nginx config is looked for.
            true => Vec::new(),
            false => log_sources(settings, &mut patterns)?,
        };
        let state_dir = (!mode.no_checkpoints).then(|| settings.state_dir.clone());
        let journal = journal_plan(settings, &mut patterns, mode, state_dir.clone())?;
        let defaults = TailOptions::default();
        let tail = TailOptions {
            logs: sources.iter().map(|s| s.path.clone()).collect(),
            exclude: exclude_globs(settings)?,
            follow_symlinks_into: settings.follow_symlinks_into.clone(),
            from_beginning: settings.from_beginning || mode.once,
            max_line: settings.max_line_bytes,
            rotate_wait: if mode.once {
                Duration::ZERO
            } else {
                defaults.rotate_wait
            },
            max_open_files: settings.max_open_files,
            unwrapping: sources.iter().map(|s| s.unwrapping).collect(),
            node_name: settings.node_name.as_deref().map(Into::into),
            park_after: if mode.once {
                Duration::ZERO
            } else {
                defaults.park_after
            },
            ..defaults
        };
        Ok(Plan {
            patterns,
            sources,
            tail,
            journal,
            state_dir,
            event: event_plan(settings)?,
            key: key_source(settings),
            delivery: delivery(settings)?,
            once: mode.once,
            once_timeout: mode.once_timeout,
            shutdown_timeout: Duration::from_millis(settings.shutdown_timeout_ms),
            metrics_addr: settings.metrics_addr.clone(),
            health_grace: Duration::from_secs(settings.health_backend_grace_s),
            status_interval: (settings.status_interval_s > 0)
                .then(|| Duration::from_secs(settings.status_interval_s)),
        })
    }
}

/// `log` values (`PATH` or `PATH=FORMAT`) and `[[logs]]` tables, each with
/// its pattern resolved. A format that names no pattern is a configuration
/// error, whatever the files hold.
fn log_sources(settings: &Settings, patterns: &mut PatternSet) -> anyhow::Result<Vec<LogSource>> {
    let default = patterns
        .resolve(&Format::from(settings.format.as_str()))
        .map_err(|e| ConfigError::new(format!("key `format`: {e}")))?;
    let mut sources = Vec::new();
    for value in &settings.log {
        let (path, format) = match value.rsplit_once('=') {
            Some((path, format)) if !path.is_empty() && !format.is_empty() => {
                (path, Some(Format::from(format)))
            }
            _ => (value.as_str(), None),
        };
        let pattern = match format {
            Some(f) => patterns
                .resolve(&f)
                .map_err(|e| ConfigError::new(format!("log {value:?}: {e}")))?,
            None => default.clone(),
        };
        sources.push(LogSource {
            path: path.to_owned(),
            pattern,
            unwrapping: unwrapping(settings.wrapper, settings.streams),
        });
    }
    for (server, conf) in server_configs(settings) {
        sources.extend(server_config_sources(server, &conf, patterns)?);
    }
    for table in &settings.logs {
        let pattern = match &table.format {
            Some(f) => patterns
                .resolve(&Format::from(f.as_str()))
                .map_err(|e| ConfigError::new(format!("[[logs]] path {:?}: {e}", table.path)))?,
            None => default.clone(),
        };
        sources.push(LogSource {
            path: table.path.clone(),
            pattern,
            unwrapping: unwrapping(
                table.wrapper.unwrap_or(settings.wrapper),
                table.streams.unwrap_or(settings.streams),
            ),
        });
    }
    Ok(sources)
}

/// The tailer's unwrapping for these settings.
fn unwrapping(wrapper: WrapperSetting, streams: StreamsSetting) -> Unwrapping {
    Unwrapping {
        wrapper: match wrapper {
            WrapperSetting::Auto => Wrapper::Auto,
            WrapperSetting::Cri => Wrapper::Cri,
            WrapperSetting::Docker => Wrapper::Docker,
            WrapperSetting::None => Wrapper::None,
        },
        streams: match streams {
            StreamsSetting::Stdout => Streams::Stdout,
            StreamsSetting::Stderr => Streams::Stderr,
            StreamsSetting::Both => Streams::Both,
        },
    }
}

/// The journal selections (`journal_unit`, `journal_identifier`,
/// `[[journal]]`), each with its pattern; `None` when there are none.
fn journal_plan(
    settings: &Settings,
    patterns: &mut PatternSet,
    mode: RunMode,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<Option<JournalPlan>> {
    let mut resolve = |format: &str, what: &str| {
        patterns
            .resolve(&Format::from(format))
            .map_err(|e| ConfigError::new(format!("{what}: {e}")))
    };
    let default = resolve(&settings.format, "key `format`")?;
    let mut selections = Vec::new();
    let mut formats = Vec::new();
    let values = settings
        .journal_unit
        .iter()
        .map(|v| (v, true))
        .chain(settings.journal_identifier.iter().map(|v| (v, false)));
    for (value, unit) in values {
        let (name, pattern) = match value.rsplit_once('=') {
            Some((name, format)) if !name.is_empty() && !format.is_empty() => (
                name,
                resolve(format, &format!("journal selection {value:?}"))?,
            ),
            _ => (value.as_str(), default.clone()),
        };
        selections.push(match unit {
            true => Selection::Unit(name.to_owned()),
            false => Selection::Identifier(name.to_owned()),
        });
        formats.push(pattern);
    }
    for table in &settings.journal {
        let selection = match (&table.unit, &table.identifier) {
            (Some(u), None) => Selection::Unit(u.clone()),
            (None, Some(i)) => Selection::Identifier(i.clone()),
            _ => {
                return Err(ConfigError::new(
                    "[[journal]]: give either `unit` or `identifier` (one table each)",
                )
                .into());
            }
        };
        let pattern = match &table.format {
            Some(f) => resolve(f, &format!("[[journal]] {}", selection.name()))?,
            None => default.clone(),
        };
        selections.push(selection);
        formats.push(pattern);
    }
    if selections.is_empty() {
        return Ok(None);
    }
    Ok(Some(JournalPlan {
        options: JournalOptions {
            selections,
            directory: settings.journal_directory.clone(),
            from_beginning: settings.from_beginning || mode.once,
            state_dir,
            program: "journalctl".into(),
            max_line: settings.max_line_bytes,
            once: mode.once,
        },
        formats,
    }))
}

/// The servers' configs to read: `nginx_conf` and `apache_conf`, or
/// nginx's own when nothing at all is given and it exists.
pub(crate) fn server_configs(settings: &Settings) -> Vec<(Server, PathBuf)> {
    let mut out = Vec::new();
    if let Some(p) = &settings.nginx_conf {
        out.push((Server::Nginx, p.clone()));
    }
    if let Some(p) = &settings.apache_conf {
        out.push((Server::Apache, p.clone()));
    }
    let default = std::path::Path::new(crate::server_config::DEFAULT_NGINX_CONF);
    if out.is_empty() && settings.log.is_empty() && settings.logs.is_empty() && default.exists() {
        out.push((Server::Nginx, default.to_owned()));
    }
    out
}

/// The access logs a server's config declares, each with its format. What
/// it had to leave out is warned about; a config that names none is an
/// error.
fn server_config_sources(
    server: Server,
    conf: &std::path::Path,
    patterns: &mut PatternSet,
) -> anyhow::Result<Vec<LogSource>> {
    let what = format!("{} config", server.key());
    let findings = crate::server_config::read(server, conf)
        .map_err(|e| ConfigError::new(format!("{what}: {e}")))?;
    for why in &findings.skipped {
        tracing::warn!("{what}: {why}");
    }
    if findings.logs.is_empty() {
        return Err(ConfigError::new(format!(
            "{what} {}: no access log the agent can follow",
            conf.display()
        ))
        .into());
    }
    let mut sources = Vec::new();
    for log in findings.logs {
        let pattern = patterns.resolve(&log.as_format()).map_err(|e| {
            ConfigError::new(format!(
                "{what}: {} (format {:?}, for {}): {e}",
                log.declared_at,
                log.format_name,
                log.path.display()
            ))
        })?;
        tracing::info!(
            "{}: {} format {:?} ({})",
            log.path.display(),
            server.key(),
            log.format_name,
            log.declared_at
        );
        sources.push(LogSource {
            path: log.path.display().to_string(),
            pattern,
            // A server's own log is its own lines.
            unwrapping: unwrapping(WrapperSetting::None, StreamsSetting::Both),
        });
    }
    Ok(sources)
}

/// The `exclude` globs, the global ones and every `[[logs]]` table's.
fn exclude_globs(settings: &Settings) -> Result<Vec<glob::Pattern>, ConfigError> {
    let tables = settings.logs.iter().flat_map(|t| t.exclude.iter());
    settings
        .exclude
        .iter()
        .chain(tables)
        .map(|g| {
            glob::Pattern::new(g)
                .map_err(|e| ConfigError::new(format!("exclude {g:?} is not a glob: {e}")))
        })
        .collect()
}

/// The bundled patterns and the user's pattern folders. A folder given
/// that does not exist is warned about (only the default one is optional).
pub fn load_patterns(settings: &Settings) -> Result<PatternSet, PatternError> {
    for dir in &settings.pattern_dirs {
        if dir.as_path() != std::path::Path::new(crate::config::DEFAULT_PATTERN_DIR)
            && !dir.is_dir()
        {
            tracing::warn!(
                "pattern folder {} does not exist (or is no folder): no user patterns are read from it",
                dir.display()
            );
        }
    }
    PatternSet::load_with(&settings.pattern_dirs, settings.metrics_header.as_deref())
}

/// What the event builder needs besides the secret key.
#[derive(Debug, Clone)]
pub struct EventPlan {
    pub identity: Identity,
    pub query_params: bool,
    pub default_https: Option<bool>,
    pub real_ip: Option<Arc<RealIp>>,
}

impl EventPlan {
    /// The event builder's options, with the key the agent decided on.
    pub(crate) fn with_key(&self, secret_key: Option<Secret>) -> EventOptions {
        EventOptions {
            identity: self.identity.clone(),
            secret_key,
            query_params: self.query_params,
            default_https: self.default_https,
            real_ip: self.real_ip.clone(),
        }
    }
}

/// What the event builder needs; the secret key as configured (a key to
/// fetch is not known yet: `check` hashes with the configured one only).
pub fn event_options(settings: &Settings) -> Result<EventOptions, ConfigError> {
    Ok(event_plan(settings)?.with_key(settings.secret_key.clone()))
}

fn event_plan(settings: &Settings) -> Result<EventPlan, ConfigError> {
    let real_ip = match settings.client_ip_from {
        ClientIpFrom::RemoteAddr => None,
        ClientIpFrom::XForwardedFor if settings.trusted_proxies.is_empty() => {
            return Err(ConfigError::new(
                "client_ip_from = \"x_forwarded_for\" needs trusted_proxies: the proxies (addresses or CIDR ranges) whose X-Forwarded-For header is believed",
            ));
        }
        ClientIpFrom::XForwardedFor => Some(Arc::new(
            RealIp::new(&settings.trusted_proxies)
                .map_err(|e| ConfigError::new(format!("key `trusted_proxies`: {e}")))?,
        )),
    };
    Ok(EventPlan {
        real_ip,
        identity: Identity {
            token: settings
                .token
                .as_ref()
                .map(|t| t.expose().to_owned())
                .unwrap_or_default(),
            client_id: settings.client_id.clone().unwrap_or_default(),
        },
        query_params: settings.query_params,
        default_https: settings.default_scheme.map(|s| s == Scheme::Https),
    })
}

fn key_source(settings: &Settings) -> KeySource {
    match (&settings.secret_key, &settings.backend_url) {
        (Some(key), _) => KeySource::Configured(key.clone()),
        (None, Some(url)) => KeySource::Fetch {
            backend_url: url.clone(),
            token: settings.token.clone(),
            trust: Trust {
                ca_file: settings.tls_ca_file.clone(),
                verify: settings.tls_verify,
            },
            wait: settings.wait_for_secret_key,
        },
        (None, None) => KeySource::None,
    }
}

/// Standard output, or the backend with its TLS set up.
pub fn delivery(settings: &Settings) -> anyhow::Result<Delivery> {
    let Some(url) = settings.ws_url.as_ref().filter(|_| !settings.stdout) else {
        if !settings.stdout {
            tracing::info!(
                "no ws_url configured: printing events to standard output as JSON lines"
            );
        }
        return Ok(Delivery::Stdout);
    };
    if url.starts_with("ws://") {
        tracing::warn!(
            "ws_url uses unencrypted ws://: events and the token travel in clear text; use wss://"
        );
    }
    let tls = if url.starts_with("wss://") {
        if !settings.tls_verify {
            tracing::warn!(
                "tls_verify = false: the backend's certificate is NOT checked; anyone on the path can read and change what is sent"
            );
        }
        Some(crate::deliver::backend::tls::client_config(
            settings.tls_ca_file.as_deref(),
            settings.tls_verify,
        )?)
    } else {
        None
    };
    // `single` replies name no event: with more than one in flight, a
    // backend that skips a reply would have every later one credit the
    // wrong event. One at a time, as the middleware sends, unless asked.
    let wire = match settings.wire {
        WireSetting::Batch => Wire::Batch,
        WireSetting::Single => Wire::Single,
    };
    let window = settings.max_in_flight.unwrap_or(match wire {
        Wire::Batch => 8,
        Wire::Single => 1,
    });
    Ok(Delivery::Backend {
        sender: Box::new(SenderConfig {
            url: url.clone(),
            token: settings.token.clone(),
            client_id: settings.client_id.clone(),
            wire,
            window,
            ack_timeout: Duration::from_millis(settings.ack_timeout_ms),
            ping_interval: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            tls,
            compression: match settings.compression {
                CompressionSetting::Deflate => Some(DeflateSettings {
                    level: settings.compression_level,
                    window_bits: settings.compression_window_bits,
                }),
                CompressionSetting::Off => None,
            },
            refusals: RefusalPolicy {
                dead_letter_after: settings.dead_letter_after,
                dead_letters: Some(DeadLetters::new(
                    &settings.state_dir,
                    settings.dead_letter_max_bytes,
                )),
                max_message_bytes: settings.max_message_bytes,
                alone_above: settings.batch_max_bytes.saturating_mul(2),
            },
        }),
        batches: BatchLimits {
            max_events: settings.batch_max_events,
            max_bytes: settings.batch_max_bytes,
            linger: Duration::from_millis(settings.batch_linger_ms),
        },
    })
}

#[cfg(test)]
mod defaults {
    use crate::config;
    use crate::deliver::backend::RefusalPolicy;
    use crate::deliver::backend::batch::BatchLimits;
    use crate::deliver::backend::compression::{self, DeflateSettings};
    use crate::tail::{self, lines};

    /// The settings' defaults and limits are the components' own: config
    /// writes them down without knowing the components.
    #[test]
    fn the_settings_defaults_are_the_components_defaults() {
        let batch = BatchLimits::default();
        assert_eq!(config::DEFAULT_BATCH_MAX_EVENTS, batch.max_events);
        assert_eq!(config::DEFAULT_BATCH_MAX_BYTES, batch.max_bytes);
        assert_eq!(
            config::DEFAULT_BATCH_LINGER_MS,
            batch.linger.as_millis() as u64
        );
        let deflate = DeflateSettings::default();
        assert_eq!(deflate.level, None);
        assert_eq!(config::DEFAULT_COMPRESSION_WINDOW_BITS, deflate.window_bits);
        assert_eq!(config::COMPRESSION_LEVELS, compression::LEVELS);
        assert_eq!(config::COMPRESSION_WINDOW_BITS, compression::WINDOW_BITS);
        assert_eq!(config::DEFAULT_MAX_OPEN_FILES, tail::DEFAULT_MAX_OPEN_FILES);
        assert_eq!(config::DEFAULT_MAX_LINE_BYTES, lines::DEFAULT_MAX_LINE);
        assert_eq!(config::MAX_LINE_BYTES_LIMIT, lines::MAX_LINE_LIMIT);
        assert_eq!(
            config::DEFAULT_DEAD_LETTER_AFTER,
            RefusalPolicy::default().dead_letter_after
        );
    }
}
