//! The servers' own configuration: which access logs a web server writes,
//! and in which format, read from its config files, so that following them
//! needs no `--log` and no pattern file (`--nginx-conf`, `--apache-conf`).
//!
//! A reader returns [`Findings`]: each log file with its server format
//! string (compiled later like `--format 'nginx:…'`), and a message for
//! each log it had to leave out (sent to syslog, a path with variables, a
//! compressed log, a file written in two formats). A config that cannot be
//! read is a [`ReadError`] naming the file and the line.

pub mod apache;
pub mod nginx;

use std::path::{Path, PathBuf};

use crate::parse::Format;
use crate::parse::server_format::Server;

/// The config read when `--nginx-conf` is not given, no log is, and it
/// exists.
pub(crate) const DEFAULT_NGINX_CONF: &str = "/etc/nginx/nginx.conf";

/// Reads a server's config for its access logs.
pub fn read(server: Server, main: &Path) -> Result<Findings, ReadError> {
    match server {
        Server::Nginx => nginx::read(main),
        Server::Apache => apache::read(main),
        Server::Gunicorn => Err(ReadError::at(
            main,
            0,
            "gunicorn's config is Python: give its access_log_format with --format 'gunicorn:…'",
        )),
    }
}

/// A log file a server writes, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundLog {
    pub path: PathBuf,
    pub server: Server,
    /// The format's name in the config (`combined`, `main`).
    pub format_name: String,
    /// The format string, in the server's syntax.
    pub format: String,
    /// Where the log is declared (`file:line`).
    pub declared_at: String,
}

impl FoundLog {
    /// The format, as `--format` would take it.
    pub(crate) fn as_format(&self) -> Format {
        Format::Server {
            server: self.server,
            text: self.format.clone(),
        }
    }
}

/// What a server's config says about its access logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    pub logs: Vec<FoundLog>,
    /// Logs left out, each with why.
    pub skipped: Vec<String>,
}

impl Findings {
    fn skip(&mut self, why: String) {
        self.skipped.push(why);
    }
}

/// A config that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ReadError {
    file: String,
    line: Option<usize>,
    message: String,
}

impl ReadError {
    fn io(path: &Path, e: std::io::Error) -> Self {
        ReadError {
            file: path.display().to_string(),
            line: None,
            message: format!("cannot read: {e}"),
        }
    }

    fn at(file: &Path, line: usize, message: impl Into<String>) -> Self {
        ReadError {
            file: file.display().to_string(),
            line: (line > 0).then_some(line),
            message: message.into(),
        }
    }
}
