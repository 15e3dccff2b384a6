//! `cerberus-agent status`: what a running agent is doing, for a person at
//! a terminal, read from its metrics address (`/metrics` and `/health`).

use std::process::ExitCode;
use std::time::Duration;

use crate::config::ConfigError;
use crate::deliver::backend::dead_letter::DeadLetters;
use crate::metrics::samples;

/// Prints the running agent's figures as a short table. Exit status 0 when
/// it is healthy, 1 when not, or when it cannot be reached.
pub fn show(metrics_addr: Option<&str>, dead_letters: &DeadLetters) -> anyhow::Result<ExitCode> {
    let Some(addr) = metrics_addr else {
        return Err(ConfigError::new(
            "no metrics address: give --metrics-addr ADDR:PORT, or set metrics_addr in the config file (the agent must serve it too)",
        )
        .into());
    };
    let base = if addr.starts_with("http://") {
        addr.trim_end_matches('/').to_owned()
    } else {
        format!("http://{addr}")
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let get = |path: &str| -> anyhow::Result<(u16, String)> {
        let mut r = agent
            .get(&format!("{base}{path}"))
            .call()
            .map_err(|e| anyhow::anyhow!("cannot reach the agent at {base}{path}: {e}"))?;
        Ok((r.status().as_u16(), r.body_mut().read_to_string()?))
    };
    let (_, exposition) = get("/metrics")?;
    let (health_status, health) = get("/health")?;
    let m = samples(&exposition);
    let v = |name: &str| m.get(name).copied().unwrap_or(0.0);
    let failed: Vec<String> = m
        .iter()
        .filter_map(|(k, n)| {
            let reason = k.strip_prefix("cerberus_agent_lines_failed_total{reason=\"")?;
            (*n > 0.0).then(|| format!("{} {n}", reason.trim_end_matches("\"}")))
        })
        .collect();
    let failed_total: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("cerberus_agent_lines_failed_total{"))
        .map(|(_, n)| n)
        .sum();
    let lag: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("cerberus_agent_file_lag_bytes{"))
        .map(|(_, n)| n)
        .sum();
    let health_text = match health_status {
        200 => "ok".to_owned(),
        _ => format!("FAILING {health}"),
    };
    let backend = if m.contains_key("cerberus_agent_backend_connected") {
        let state = if v("cerberus_agent_backend_connected") == 1.0 {
            "connected"
        } else {
            "not connected"
        };
        format!(
            "{state}, {} reconnects, {} errors",
            v("cerberus_agent_reconnects_total"),
            v("cerberus_agent_backend_errors_total")
        )
    } else {
        "none (events go to standard output)".to_owned()
    };
    println!("health      {health_text}");
    println!("backend     {backend}");
    println!(
        "lines       read {}, parsed {}, failed {failed_total}{}",
        v("cerberus_agent_lines_read_total"),
        v("cerberus_agent_lines_parsed_total"),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" ({})", failed.join(", "))
        }
    );
    println!(
        "events      sent {}, acknowledged {}, in flight {}, resent {}, oldest unacknowledged {} s",
        v("cerberus_agent_events_sent_total"),
        v("cerberus_agent_events_acked_total"),
        v("cerberus_agent_in_flight_events"),
        v("cerberus_agent_events_resent_total"),
        v("cerberus_agent_oldest_unacked_seconds")
    );
    println!(
        "files       {} open, {lag} bytes not yet delivered, {} unreadable, {} rotations",
        v("cerberus_agent_files_watched"),
        v("cerberus_agent_files_unreadable"),
        v("cerberus_agent_rotations_total")
    );
    let waiting = dead_letters.count();
    println!(
        "dead letters {waiting} waiting in {}{} ({} this run)",
        dead_letters.path().display(),
        if waiting > 0 {
            ": `cerberus-agent replay-dead-letters` sends them again"
        } else {
            ""
        },
        v("cerberus_agent_events_dead_lettered_total")
    );
    println!(
        "secret key  {}",
        if v("cerberus_agent_secret_key_ready") == 1.0 {
            "ready"
        } else {
            "MISSING"
        }
    );
    Ok(if health_status == 200 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
