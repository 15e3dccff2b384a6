//! The `cerberus-agent` binary: parse flags, layer settings, make a plan,
//! install the signal handlers, run a command. All real work lives in the
//! library.

use std::fs::File;
use std::io;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use cerberus_agent::agent::End;
use cerberus_agent::cli::{CheckArgs, Cli, Command};
use cerberus_agent::config::{ConfigError, LogFormat, Settings};
use cerberus_agent::deliver::backend::dead_letter::DeadLetters;
use cerberus_agent::journal::Selection;
use cerberus_agent::metrics::{self, Telemetry};
use cerberus_agent::parse::server_format::Server;
use cerberus_agent::parse::{Format, PatternError, PatternOrigin};
use cerberus_agent::plan::{self, Delivery, Plan, RunMode};
use cerberus_agent::wake::{Wake, Wakes};
use cerberus_agent::{agent, check, status};

/// Exit status for configuration errors.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let matches = cerberus_agent::cli::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let layers = cli.layers();
    let settings = match layers.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cerberus-agent: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&settings);
    let from_flags = [
        ("--token", "token", "CERBERUS_TOKEN"),
        ("--secret-key", "secret_key", "CERBERUS_SECRET_KEY"),
    ];
    for (flag, key, var) in from_flags {
        if layers.flags.contains_key(key) {
            tracing::warn!(
                "{flag} was given on the command line, where every user of this machine reads it (`ps`): set {var} in /etc/cerberus/agent.env, or the config file, instead"
            );
        }
    }
    for var in layers.unknown_env() {
        tracing::warn!(
            "ignoring the environment variable {var}: it is no setting of cerberus-agent (README.md lists them)"
        );
    }
    let result = match &cli.command {
        None => once_timeout(cli.run.once_timeout).and_then(|once_timeout| {
            let mode = RunMode {
                once: cli.run.once,
                no_checkpoints: cli.run.no_checkpoints,
                once_timeout,
            };
            let config_file = layers.file.as_ref().map(|(path, _)| path.as_path());
            for warning in cerberus_agent::privileges::warnings(config_file) {
                tracing::warn!("{warning}");
            }
            // A reload reads the config file again; flags and the
            // environment are the process's own and stay as they were.
            let reread = || -> anyhow::Result<Plan> {
                let layers = cli.layers();
                Plan::from_settings(&layers.settings()?, mode)
            };
            run_agent(&settings, mode, Box::new(reread))
        }),
        Some(Command::Patterns(_)) => list_patterns(&settings),
        Some(Command::Status(_)) => status::show(
            settings.metrics_addr.as_deref(),
            &DeadLetters::new(&settings.state_dir, settings.dead_letter_max_bytes),
        ),
        Some(Command::Check(args)) => run_check(&settings, args),
        Some(Command::ReplayDeadLetters(args)) => {
            cerberus_agent::replay::replay(&settings, Duration::from_secs(args.timeout))
        }
    };
    match result {
        Ok(code) => code,
        // `cerberus-agent check … | head` is not an error; the agent's own
        // standard output closing is (events were not delivered).
        Err(e) if is_broken_pipe(&e) && cli.command.is_some() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cerberus-agent: {e:#}");
            if is_config_error(&e) {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn once_timeout(seconds: Option<f64>) -> anyhow::Result<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(ConfigError::new(format!(
            "--once-timeout is {s}: expected a number of seconds above 0"
        ))
        .into()),
    }
}

/// Runs the agent. In `--once` mode the exit status says whether the job
/// was done: 0 only when every file was read and every event delivered.
fn run_agent(
    settings: &Settings,
    mode: RunMode,
    reload: agent::Reloader<'_>,
) -> anyhow::Result<ExitCode> {
    let plan = Plan::from_settings(settings, mode)?;
    let wakes = Wakes::new();
    forward_signals(&wakes)?;
    let telemetry = Arc::new(Telemetry {
        sender: matches!(plan.delivery, Delivery::Backend { .. }).then(Arc::default),
        ..Telemetry::default()
    });
    if let Some(addr) = &plan.metrics_addr {
        let bound = metrics::serve(addr, telemetry.clone(), plan.health_grace)
            .map_err(|e| ConfigError::new(format!("key `metrics_addr`: {e:#}")))?;
        tracing::info!("metrics at http://{bound}/metrics, health at /health and /ready");
    }
    let dead_letters = match &plan.delivery {
        Delivery::Backend { sender, .. } => sender.refusals.dead_letters.clone(),
        Delivery::Stdout => None,
    };
    let sender_stats = telemetry.sender.clone();
    let report = agent::run(plan, &wakes, telemetry, Some(reload))?;
    let dead = sender_stats.map_or(0, |s| {
        s.events_dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed)
    });
    if dead > 0 {
        let path = dead_letters.map(|d| d.path().display().to_string());
        eprintln!(
            "cerberus-agent: {dead} events the backend refused were written to {}; `cerberus-agent replay-dead-letters` sends them again",
            path.unwrap_or_default()
        );
    }
    if !mode.once || report.once_complete() {
        // A --once run that left events in the dead-letter file did not
        // deliver everything: it says so above.
        return Ok(if mode.once && dead > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let why = match report.end {
        End::Stopped => "stopped by a signal before the end",
        End::TimedOut => "--once-timeout passed",
        End::Finished | End::SinkFailed => "not everything could be delivered",
    };
    eprintln!(
        "cerberus-agent: {why}: {} of {} events acknowledged, {} not delivered (they are sent again at the next start), {} lines skipped in files of unknown format, {} files that could not be read",
        report.acknowledged,
        report.events,
        report.unacknowledged,
        report.lines_unrecognised,
        report.files_unreadable
    );
    Ok(ExitCode::FAILURE)
}

/// SIGTERM and SIGINT wake the agent's loop to stop gracefully (deliver
/// what is in flight, save checkpoints); SIGHUP, to reload the
/// configuration (what `systemctl reload` sends).
fn forward_signals(wakes: &Wakes) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("installing signal handlers")?;
    let waker = wakes.waker();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                waker.wake(match signal {
                    SIGHUP => Wake::Reload,
                    _ => Wake::Shutdown,
                });
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Errors in what the operator configured (as opposed to the world) exit 2.
fn is_config_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<ConfigError>().is_some() || c.downcast_ref::<PatternError>().is_some()
    })
}

/// Libraries whose messages are never shown, whatever CERBERUS_LOG_FILTER
/// says: the WebSocket library logs every ordinary disconnect at ERROR (in
/// Rust's debug format) beside the agent's own WARN, and it and the HTTP
/// client log URLs and handshake headers, which carry the token, at debug
/// and trace. The agent reports what they saw in its own words.
const QUIET_LIBRARIES: [&str; 6] = [
    "ratchet_core",
    "ratchet_deflate",
    "ratchet_ext",
    "ratchet_rs",
    "ureq",
    "ureq_proto",
];

fn init_logging(settings: &Settings) {
    use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let level = if settings.debug { "debug" } else { "info" };
    let asked =
        EnvFilter::try_from_env("CERBERUS_LOG_FILTER").unwrap_or_else(|_| EnvFilter::new(level));
    let quiet = QUIET_LIBRARIES
        .iter()
        .fold(Targets::new().with_default(LevelFilter::TRACE), |t, lib| {
            t.with_target(*lib, LevelFilter::OFF)
        })
        // TLS: its warnings, never its handshake traces.
        .with_target("rustls", LevelFilter::WARN)
        .with_target("tokio_rustls", LevelFilter::WARN);
    let filter = asked.and(quiet);
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    let registry = tracing_subscriber::registry();
    match settings.log_format {
        LogFormat::Text => {
            let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
            registry
                .with(
                    fmt.with_writer(cerberus_agent::diagnostics::EscapedStderr { colours })
                        .with_ansi(colours)
                        .without_time()
                        .with_filter(filter),
                )
                .init()
        }
        // JSON escapes what it writes.
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .with_filter(filter),
            )
            .init(),
    }
}

fn list_patterns(settings: &Settings) -> anyhow::Result<ExitCode> {
    let set = plan::load_patterns(settings)?;
    for p in set.iter() {
        let origin = match &p.origin {
            PatternOrigin::Bundled => "bundled".into(),
            PatternOrigin::File(path) => format!("user ({})", path.display()),
            PatternOrigin::Flag => "--format".into(),
        };
        println!("{:<20} {:<8} {}", p.name, origin, p.description);
    }
    Ok(ExitCode::SUCCESS)
}

fn run_check(settings: &Settings, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let configs: Vec<_> = [
        (Server::Nginx, &settings.nginx_conf),
        (Server::Apache, &settings.apache_conf),
    ]
    .into_iter()
    .filter_map(|(server, conf)| conf.clone().map(|c| (server, c)))
    .collect();
    if !configs.is_empty() && args.file.is_none() {
        let mut out = io::BufWriter::new(io::stdout().lock());
        let mut logs = 0;
        for (server, conf) in configs {
            let findings = cerberus_agent::server_config::read(server, &conf)
                .map_err(|e| ConfigError::new(format!("{} config: {e}", server.key())))?;
            logs += check::server_config(&findings, &mut out)?;
        }
        io::Write::flush(&mut out)?;
        return Ok(if logs == 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let mut set = plan::load_patterns(settings)?;
    let options = plan::event_options(settings)?;
    let format = Format::from(args.format.as_str());
    let mut out = io::BufWriter::new(io::stdout().lock());
    let selection = match (&args.journal_unit, &args.journal_identifier) {
        (Some(u), _) => Some(Selection::Unit(u.clone())),
        (None, Some(i)) => Some(Selection::Identifier(i.clone())),
        (None, None) => None,
    };
    let input: Box<dyn io::Read> = match (selection, args.file.as_deref()) {
        (Some(selection), _) => {
            use std::io::Write as _;
            let text = cerberus_agent::journal::recent_messages(
                args.journal_directory.clone(),
                &selection,
                200,
            )
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", selection.name()))?;
            let entries = text.iter().filter(|&&b| b == b'\n').count();
            writeln!(out, "{}: its last {entries} entries", selection.name())?;
            Box::new(io::Cursor::new(text))
        }
        (None, Some(p)) if p.as_os_str() != "-" => {
            Box::new(File::open(p).map_err(|e| anyhow::anyhow!("opening {}: {e}", p.display()))?)
        }
        _ => Box::new(io::stdin()),
    };
    let summary = check::check(
        input,
        &mut set,
        &format,
        &options,
        settings.max_line_bytes,
        &mut out,
    )?;
    io::Write::flush(&mut out)?;
    Ok(if summary.parsed == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
