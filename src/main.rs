//! The `cerberus-agent` binary: parse flags, layer settings, run a command.
//! All real work lives in the library.

use std::fs::File;
use std::process::ExitCode;

use clap::Parser;

use cerberus_agent::cli::{Cli, Command};
use cerberus_agent::config::{Layers, Settings};
use cerberus_agent::parse::PatternSet;
use cerberus_agent::{agent, check};

/// Exit status for configuration errors.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (common, run) = match &cli.command {
        Some(Command::Check(args)) => (&args.common, None),
        Some(Command::Patterns(common)) => (common, None),
        None => (&cli.run.common, Some(&cli.run)),
    };
    let settings = match Layers::from_process(common, run).settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cerberus-agent: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&settings);
    let result = match &cli.command {
        None => {
            let mode = agent::RunMode {
                once: cli.run.once,
                no_checkpoints: cli.run.no_checkpoints,
            };
            agent::run(&settings, mode).map(|_| ExitCode::SUCCESS)
        }
        Some(Command::Patterns(_)) => list_patterns(&settings),
        Some(Command::Check(args)) => run_check(&settings, args),
    };
    match result {
        Ok(code) => code,
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

/// Errors in what the operator configured (as opposed to the world) exit 2.
fn is_config_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<cerberus_agent::config::ConfigError>()
            .is_some()
            || c.downcast_ref::<cerberus_agent::parse::PatternError>()
                .is_some()
    })
}

fn init_logging(settings: &Settings) {
    let level = if settings.debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CERBERUS_LOG_FILTER")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
}

fn list_patterns(settings: &Settings) -> anyhow::Result<ExitCode> {
    let set = PatternSet::load(&settings.pattern_dirs)?;
    for p in set.iter() {
        println!(
            "{:<20} {:<8} {}",
            p.name,
            short_origin(&p.origin),
            p.description
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn short_origin(origin: &cerberus_agent::parse::Origin) -> String {
    match origin {
        cerberus_agent::parse::Origin::Bundled => "bundled".into(),
        cerberus_agent::parse::Origin::File(p) => format!("user ({})", p.display()),
    }
}

fn run_check(
    settings: &Settings,
    args: &cerberus_agent::cli::CheckArgs,
) -> anyhow::Result<ExitCode> {
    let mut set = PatternSet::load(&settings.pattern_dirs)?;
    let options = settings.event_options();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let summary = match args.file.as_deref() {
        Some(p) if p.as_os_str() != "-" => {
            let file =
                File::open(p).map_err(|e| anyhow::anyhow!("opening {}: {e}", p.display()))?;
            check::check(
                file,
                &mut set,
                &args.format,
                &options,
                settings.max_line_bytes,
                &mut out,
            )?
        }
        _ => check::check(
            std::io::stdin(),
            &mut set,
            &args.format,
            &options,
            settings.max_line_bytes,
            &mut out,
        )?,
    };
    std::io::Write::flush(&mut out)?;
    Ok(if summary.parsed == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
