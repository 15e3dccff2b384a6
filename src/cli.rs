//! The command line. Every flag is defined here once, with its help text.
//!
//! Flags override the configuration file and `CERBERUS_*` environment
//! variables (see `config.rs`); only flags that were given take part.
//! A flag that is a setting serialises under the setting's key (its field
//! name, or the `rename` beside it); flags that are not settings are
//! skipped. The key is thus written once, here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::config::{
    Choice, CompressionSetting, LogFormat, StreamsSetting, WireSetting, WrapperSetting,
};

fn is_false(b: &bool) -> bool {
    !*b
}

/// A flag whose value is one of a setting's names (the same names as in
/// the config file).
fn choice<T: Choice + Clone + Send + Sync>() -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(T::names())
        .try_map(|name| T::from_name(&name).ok_or("not one of the allowed values"))
}

/// Ship web access logs to the Cerberus analytics backend.
///
/// Tails nginx, gunicorn, Apache and JSON access logs, turns every request
/// into a Cerberus event (client IP pseudonymised with HMAC-SHA256) and sends
/// the events to the backend, or prints them as JSON lines with --stdout.
#[derive(Debug, Parser)]
#[command(
    name = "cerberus-agent",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Settings come from defaults < the config file < CERBERUS_* environment variables < flags.\n\
CERBERUS_LOG_FILTER sets what is logged (tracing's syntax: error, warn, info, debug).\n\n\
Exit status:\n  \
0  done (with --once: every file read and every event acknowledged)\n  \
1  failed; with --once also: stopped by a signal, --once-timeout passed, standard output closed,\n     \
or lines skipped in files whose format is unknown (the message says how many events were not delivered)\n  \
2  configuration error (the message names the key, variable or file)\n\n\
Signals: SIGTERM and SIGINT stop gracefully (what is in flight is delivered, checkpoints saved);\n\
SIGHUP reloads the config file (a file that does not load leaves the old configuration in force)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse a file (or standard input) and show each event or why a line
    /// failed, then a summary. Exits non-zero when no line parsed.
    Check(CheckArgs),
    /// List the bundled and user patterns.
    Patterns(PatternArgs),
    /// Show what a running agent is doing, from its metrics address: lines,
    /// events, files, backend, health. Exits 1 when it is not healthy or
    /// cannot be reached.
    Status(StatusArgs),
    /// Send the events of the dead-letter file (events the backend refused
    /// on their own) to the backend again, once it takes them. Exits 1
    /// when some were not delivered; they stay for the next replay.
    ReplayDeadLetters(ReplayArgs),
}

/// `cerberus-agent replay-dead-letters`.
#[derive(Debug, Args, Default, Clone, Serialize)]
pub struct ReplayArgs {
    /// The state folder whose dead-letter file is sent. Default: the
    /// `state_dir` setting
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,

    /// The backend's WebSocket URL. Default: the `ws_url` setting
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_url: Option<String>,

    /// Give up waiting for the backend after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    #[serde(skip)]
    pub timeout: u64,

    #[command(flatten)]
    #[serde(flatten)]
    pub config: ConfigArgs,
}

/// The configuration file: shared by every command.
#[derive(Debug, Args, Default, Clone, Serialize)]
pub struct ConfigArgs {
    /// Configuration file (TOML). Default: /etc/cerberus/agent.toml if present.
    #[arg(long, value_name = "FILE", env = "CERBERUS_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

/// `cerberus-agent status`.
#[derive(Debug, Args, Default, Clone, Serialize)]
pub struct StatusArgs {
    /// The running agent's metrics address (ADDR:PORT). Default: its
    /// `metrics_addr` setting
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,

    #[command(flatten)]
    #[serde(flatten)]
    pub config: ConfigArgs,
}

/// Where settings and patterns come from.
#[derive(Debug, Args, Default, Clone, Serialize)]
pub struct PatternArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub config: ConfigArgs,

    /// A folder of user pattern files (*.toml); repeatable. They add to the
    /// bundled patterns and replace bundled ones of the same name.
    /// Default: /etc/cerberus/patterns.d
    #[arg(long = "pattern-dir", value_name = "DIR")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pattern_dirs: Vec<PathBuf>,
}

/// Settings shared by the commands that build events.
#[derive(Debug, Args, Default, Clone, Serialize)]
pub struct CommonArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub patterns: PatternArgs,

    /// Secret key for the HMAC-SHA256 of client IPs. Prefer the config file
    /// or CERBERUS_SECRET_KEY: flags are visible to other users in `ps`.
    #[arg(long, value_name = "KEY", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,

    /// Send query parameters (sanitised) in `query_params`; by default query
    /// strings are dropped.
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    pub query_params: bool,

    /// Follow the access logs this nginx config (with its includes)
    /// declares, each with its own log_format. Default: /etc/nginx/nginx.conf
    /// when no log is given and it exists
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nginx_conf: Option<PathBuf>,

    /// Follow the access logs this Apache config (with its Includes)
    /// declares with CustomLog, each with its LogFormat
    /// (/etc/apache2/apache2.conf, /etc/httpd/conf/httpd.conf)
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apache_conf: Option<PathBuf>,
}

/// `cerberus-agent check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The pattern to use: a bundled or user pattern name, a path to a
    /// pattern file, or `auto` (try every pattern on each line).
    #[arg(long, value_name = "NAME|FILE", default_value = "auto")]
    pub format: String,

    /// The log file to check; `-` or nothing reads standard input. With
    /// --nginx-conf or --apache-conf and no FILE: what the config declares (each log, its
    /// format, the event fields it fills and those it leaves empty).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Check what this systemd unit wrote to the journal (its last 200
    /// entries) instead of a file
    #[arg(long, value_name = "UNIT", conflicts_with = "file")]
    pub journal_unit: Option<String>,

    /// Check the last 200 journal entries of this program
    /// (`SYSLOG_IDENTIFIER`) instead of a file
    #[arg(long, value_name = "NAME", conflicts_with_all = ["file", "journal_unit"])]
    pub journal_identifier: Option<String>,

    /// With --journal-unit or --journal-identifier: the journal in this
    /// folder instead of the system's
    #[arg(long, value_name = "DIR")]
    pub journal_directory: Option<PathBuf>,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Running the agent.
#[derive(Debug, Args, Default, Serialize)]
pub struct RunArgs {
    /// A log file or glob to follow; repeatable. `PATH=FORMAT` reads it
    /// with its own format (for paths holding `=`, use `[[logs]]` in the
    /// config file).
    #[arg(long = "log", value_name = "PATH[=FORMAT]")]
    #[serde(rename = "log", skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,

    /// Read the access lines this systemd unit writes to the journal
    /// (`_SYSTEMD_UNIT`, `gunicorn.service`); repeatable. `UNIT=FORMAT`
    /// reads them with that format (default: detected from its first
    /// messages). The agent's user must be in the `systemd-journal` group
    #[arg(long, value_name = "UNIT[=FORMAT]")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub journal_unit: Vec<String>,

    /// Read the journal entries of this program (`SYSLOG_IDENTIFIER`, as
    /// nginx's `access_log syslog:` writes them); repeatable;
    /// `NAME=FORMAT` as for --journal-unit
    #[arg(long, value_name = "NAME[=FORMAT]")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub journal_identifier: Vec<String>,

    /// Read the journal in this folder instead of the system's
    /// (`journalctl --directory`)
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_directory: Option<PathBuf>,

    /// A glob of files never to follow, even when a --log glob matches
    /// them (`/var/log/nginx/error.log`); repeatable.
    #[arg(long, value_name = "GLOB")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,

    /// The records log lines are wrapped in: `auto` (default: decided from
    /// each file's first record), `cri` (containerd, CRI-O), `docker`
    /// (`json-file`) or `none`.
    #[arg(long, value_name = "WRAPPER", value_parser = choice::<WrapperSetting>())]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wrapper: Option<WrapperSetting>,

    /// Which of a container's outputs are read: `stdout` (default),
    /// `stderr` or `both`.
    #[arg(long, value_name = "STREAMS", value_parser = choice::<StreamsSetting>())]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<StreamsSetting>,

    /// The node's name, added to each event of a container's log
    /// (`kubernetes.node`).
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,

    /// The log format: a pattern name (see `cerberus-agent patterns`), a
    /// path to a pattern file, or `auto` to detect it from the first lines.
    /// Default: auto
    #[arg(long, value_name = "NAME|FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,

    /// The backend's WebSocket URL (wss://… or ws://…).
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_url: Option<String>,

    /// The exchange with the backend: `batch` (default; one acknowledgement
    /// per batch) or `single` (one event per message, as the middleware
    /// sends them; for backends that know only that).
    #[arg(long, value_name = "WIRE", value_parser = choice::<WireSetting>())]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wire: Option<WireSetting>,

    /// Compression on the WebSocket: `deflate` (default; permessage-deflate,
    /// used when the backend accepts it, plain messages otherwise) or `off`.
    /// Level and window: `compression_level`, `compression_window_bits`.
    #[arg(long, value_name = "HOW", value_parser = choice::<CompressionSetting>())]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<CompressionSetting>,

    /// The API token. Prefer the config file or CERBERUS_TOKEN: flags are
    /// visible to other users in `ps`.
    #[arg(long, value_name = "TOKEN", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,

    /// The client id sent in every event.
    #[arg(long, value_name = "ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,

    /// The backend's HTTP URL, from which the secret key is fetched when
    /// none is configured.
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_url: Option<String>,

    /// Where checkpoints are kept. Default: /var/lib/cerberus-agent
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,

    /// Print events as JSON lines instead of sending them (the default when
    /// no ws_url is configured).
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    pub stdout: bool,

    /// Read files that have no checkpoint from their beginning instead of
    /// their end.
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    pub from_beginning: bool,

    /// Read the given files to their end, deliver every event, and exit.
    /// Files without a checkpoint are read from their beginning.
    #[arg(long)]
    #[serde(skip)]
    pub once: bool,

    /// With --once: give up after this many seconds, saying how many
    /// events were not delivered (exit status 1); they are sent again at
    /// the next start. Default: wait as long as it takes.
    #[arg(long, value_name = "SECONDS", requires = "once")]
    #[serde(skip)]
    pub once_timeout: Option<f64>,

    /// Neither resume from nor save checkpoints (for trying the agent out:
    /// every run reads the files afresh).
    #[arg(long)]
    #[serde(skip)]
    pub no_checkpoints: bool,

    /// How the agent's own messages are written on stderr: `text` (default)
    /// or `json` (one object per message, with time and level).
    #[arg(long, value_name = "FORMAT", value_parser = choice::<LogFormat>())]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,

    /// Serve Prometheus metrics at /metrics, and /health and /ready, on
    /// this address (ADDR:PORT, e.g. 127.0.0.1:9478). Default: off
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,

    /// Longest line kept whole, in bytes; longer lines are cut and counted.
    /// Default: 65536, at most 16777216
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_line_bytes: Option<usize>,

    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
}

/// The command line as clap defines it, each setting's flag
/// with the environment variable that sets it too. The binary parses with
/// it; the man page and the shell completions are made from it.
pub fn command() -> clap::Command {
    with_env_names(<Cli as clap::CommandFactory>::command())
}

/// Adds to each flag that sets a setting the environment variable that
/// sets it too (`[env: CERBERUS_WS_URL]`), in every command's help.
fn with_env_names(command: clap::Command) -> clap::Command {
    env_names_of_args(command)
        .mut_subcommand("check", env_names_of_args)
        .mut_subcommand("patterns", env_names_of_args)
        .mut_subcommand("status", env_names_of_args)
        .mut_subcommand("replay-dead-letters", env_names_of_args)
}

fn env_names_of_args(command: clap::Command) -> clap::Command {
    let keys = crate::config::settings_keys();
    command.mut_args(|arg| {
        let Some(long) = arg.get_long() else {
            return arg;
        };
        let key = long.replace('-', "_");
        let key = [key.clone(), format!("{key}s")]
            .into_iter()
            .find(|k| keys.contains(&k.as_str()));
        match (key, arg.get_help().map(|h| h.to_string())) {
            (Some(key), Some(help)) => {
                let var = format!("CERBERUS_{}", key.to_ascii_uppercase());
                arg.help(format!("{help} [env: {var}]"))
            }
            _ => arg,
        }
    })
}

/// The flags that were given, under their settings keys (see the module
/// doc): the command line's layer of the settings. `run` holds `common`
/// flattened, so it is used when there is one.
pub fn given_flags(
    common: &CommonArgs,
    run: Option<&RunArgs>,
) -> serde_json::Map<String, serde_json::Value> {
    match run {
        Some(run) => flags_of(run),
        None => flags_of(common),
    }
}

/// Flags serialised under their settings keys (those not given are left
/// out by their `skip_serializing_if`).
fn flags_of(args: &impl Serialize) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(args) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

/// The settings' layers for these flags, from the process's environment.
pub fn layers(common: &CommonArgs, run: Option<&RunArgs>) -> crate::config::Layers {
    crate::config::Layers::from_process(
        common.patterns.config.config.as_deref(),
        given_flags(common, run),
    )
}

/// The layers of a subcommand that takes `--config` and flags of its own
/// (serialised under their settings keys).
fn own(config: &ConfigArgs, args: &impl Serialize) -> crate::config::Layers {
    crate::config::Layers::from_process(config.config.as_deref(), flags_of(args))
}

impl Cli {
    /// The settings' layers for the command given: the config file, the
    /// environment, and that command's own flags.
    pub fn layers(&self) -> crate::config::Layers {
        match &self.command {
            None => layers(&self.run.common, Some(&self.run)),
            Some(Command::Check(args)) => layers(&args.common, None),
            Some(Command::Patterns(args)) => own(&args.config, args),
            Some(Command::Status(args)) => own(&args.config, args),
            Some(Command::ReplayDeadLetters(args)) => own(&args.config, args),
        }
    }
}
