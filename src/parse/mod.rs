//! Parse: log lines into fields, by pattern files.
//!
//! [`PatternSet`] holds every known log format: the ones bundled from the
//! repository's `patterns/` folder, then the user's pattern folders, where a
//! file with the same name overrides a bundled one. Each [`Pattern`] is
//! compiled once at start and splits lines into [`Fields`].

pub mod escape;
pub mod fields;
pub mod pattern;
pub mod server_format;
pub mod template;
pub mod timestamp;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use fields::{Fields, Role};
pub use pattern::SplitError;
pub use pattern::{Pattern, PatternError, PatternOrigin};

/// The pattern files compiled into the binary, by name.
const BUNDLED: &[(&str, &str)] = &[
    ("nginx_json", include_str!("../../patterns/nginx_json.toml")),
    (
        "gunicorn_cerberus",
        include_str!("../../patterns/gunicorn_cerberus.toml"),
    ),
    (
        "ingress_nginx",
        include_str!("../../patterns/ingress_nginx.toml"),
    ),
    ("nginx_main", include_str!("../../patterns/nginx_main.toml")),
    (
        "nginx_combined",
        include_str!("../../patterns/nginx_combined.toml"),
    ),
    (
        "apache_vhost_combined",
        include_str!("../../patterns/apache_vhost_combined.toml"),
    ),
    (
        "apache_combined",
        include_str!("../../patterns/apache_combined.toml"),
    ),
    ("gunicorn", include_str!("../../patterns/gunicorn.toml")),
    (
        "apache_common",
        include_str!("../../patterns/apache_common.toml"),
    ),
    ("json", include_str!("../../patterns/json.toml")),
    ("caddy", include_str!("../../patterns/caddy.toml")),
    ("uwsgi", include_str!("../../patterns/uwsgi.toml")),
    ("hypercorn", include_str!("../../patterns/hypercorn.toml")),
    ("uvicorn", include_str!("../../patterns/uvicorn.toml")),
    ("daphne", include_str!("../../patterns/daphne.toml")),
    ("granian", include_str!("../../patterns/granian.toml")),
];

/// The names of the bundled patterns.
pub fn bundled_names() -> impl Iterator<Item = &'static str> {
    BUNDLED.iter().map(|(name, _)| *name)
}

/// Every log format the agent knows, in `--format auto` trial order.
#[derive(Debug, Clone)]
pub struct PatternSet {
    patterns: Vec<Arc<Pattern>>,
    /// The `metrics_header` setting, for the server format strings of
    /// user patterns and `--format` (the bundled ones name theirs).
    metrics_header: Option<String>,
}

impl PatternSet {
    /// Only the bundled patterns.
    pub fn bundled() -> Result<Self, PatternError> {
        let mut patterns = Vec::new();
        for (name, text) in BUNDLED {
            patterns.push(Arc::new(Pattern::from_toml(
                text,
                name,
                PatternOrigin::Bundled,
            )?));
        }
        let mut set = PatternSet {
            patterns,
            metrics_header: None,
        };
        set.sort();
        Ok(set)
    }

    /// The bundled patterns, then every `*.toml` in `dirs` (folders that do
    /// not exist are skipped: they are optional). A user pattern replaces a
    /// bundled or earlier one of the same name.
    pub fn load(dirs: &[PathBuf]) -> Result<Self, PatternError> {
        Self::load_with(dirs, None)
    }

    /// As [`PatternSet::load`], with the `metrics_header` setting.
    pub(crate) fn load_with(
        dirs: &[PathBuf],
        metrics_header: Option<&str>,
    ) -> Result<Self, PatternError> {
        let mut set = Self::bundled()?;
        set.metrics_header = metrics_header.map(str::to_owned);
        for dir in dirs {
            for path in toml_files_in(dir)? {
                set.add_file(&path)?;
            }
        }
        Ok(set)
    }

    /// Compiles the pattern file at `path` and adds it, replacing any
    /// pattern of the same name. Returns the pattern's name.
    pub(crate) fn add_file(&mut self, path: &Path) -> Result<Arc<Pattern>, PatternError> {
        let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pattern = Arc::new(Pattern::from_toml_with(
            &text,
            &stem,
            PatternOrigin::File(path.to_owned()),
            self.metrics_header.as_deref(),
        )?);
        self.patterns.retain(|p| p.name != pattern.name);
        self.patterns.push(pattern.clone());
        self.sort();
        Ok(pattern)
    }

    fn sort(&mut self) {
        self.patterns
            .sort_by(|a, b| (a.detect_priority, &a.name).cmp(&(b.detect_priority, &b.name)));
    }

    /// The pattern called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Pattern>> {
        self.patterns.iter().find(|p| p.name == name).cloned()
    }

    /// All patterns in trial order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pattern>> {
        self.patterns.iter()
    }

    /// The names, for messages.
    pub fn names(&self) -> Vec<&str> {
        self.patterns.iter().map(|p| p.name.as_str()).collect()
    }
}

fn io_error(path: &Path, e: std::io::Error) -> PatternError {
    PatternError::io(path, e)
}

fn toml_files_in(dir: &Path) -> Result<Vec<PathBuf>, PatternError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir, e)),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The `format` setting: which pattern a log is read with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(from = "String")]
pub enum Format {
    /// Detect the pattern from the file's first lines.
    Auto,
    /// A bundled or user pattern, by name.
    Named(String),
    /// A pattern file, compiled at start.
    File(PathBuf),
    /// A format string in a server's own syntax (`nginx:$remote_addr …`).
    Server {
        server: server_format::Server,
        text: String,
    },
}

impl From<String> for Format {
    fn from(s: String) -> Self {
        for server in server_format::Server::ALL {
            if let Some(text) = s
                .strip_prefix(server.key())
                .and_then(|t| t.strip_prefix(':'))
            {
                return Format::Server {
                    server,
                    text: text.to_owned(),
                };
            }
        }
        if s == "auto" {
            Format::Auto
        } else if s.contains('/') || s.ends_with(".toml") {
            Format::File(PathBuf::from(s))
        } else {
            Format::Named(s)
        }
    }
}

impl From<&str> for Format {
    fn from(s: &str) -> Self {
        Format::from(s.to_owned())
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Format::Auto => f.write_str("auto"),
            Format::Named(n) => f.write_str(n),
            Format::File(p) => write!(f, "{}", p.display()),
            Format::Server { server, text } => write!(f, "{}:{text}", server.key()),
        }
    }
}

impl PatternSet {
    /// The pattern a `Named` or `File` format names (compiling and adding a
    /// pattern file); `None` for `Auto`, which is decided per file.
    pub(crate) fn resolve(&mut self, format: &Format) -> Result<Option<Arc<Pattern>>, String> {
        let unknown = |set: &PatternSet, what: &str| {
            format!(
                "format {what:?} is neither a known pattern nor a pattern file; known patterns: {}, or \"auto\"",
                set.names().join(", ")
            )
        };
        match format {
            Format::Auto => Ok(None),
            Format::Named(name) => match self.get(name) {
                Some(p) => Ok(Some(p)),
                // A pattern file in the working folder, named without a path.
                None if Path::new(name).is_file() => self
                    .add_file(Path::new(name))
                    .map(Some)
                    .map_err(|e| e.to_string()),
                None => Err(unknown(self, name)),
            },
            Format::File(path) if path.is_file() => {
                self.add_file(path).map(Some).map_err(|e| e.to_string())
            }
            Format::File(path) => match self.get(&path.display().to_string()) {
                Some(p) => Ok(Some(p)),
                None => Err(unknown(self, &path.display().to_string())),
            },
            Format::Server { server, text } => {
                let name = format.to_string();
                if let Some(p) = self.get(&name) {
                    return Ok(Some(p));
                }
                let pattern =
                    Pattern::from_server_format(*server, text, self.metrics_header.as_deref())
                        .map_err(|e| e.to_string())?;
                let pattern = Arc::new(pattern);
                self.patterns.push(pattern.clone());
                Ok(Some(pattern))
            }
        }
    }
}
