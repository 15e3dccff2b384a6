//! Start-up checks of what the agent runs with: a warning when it runs as
//! root (the service never does; a person trying it with sudo may), and
//! when a file holding its token or secret key may be read by every user.
//!
//! Only warnings: the agent works either way, and an operator who chose so
//! is told once at each start, not stopped.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The environment file the packaged service reads its secrets from.
pub(crate) const SERVICE_ENV_FILE: &str = "/etc/cerberus/agent.env";

/// Settings whose values are secrets, as config keys and as variables.
const SECRET_KEYS: &[&str] = &["token", "secret_key"];

/// Whether the process runs with root's user id.
pub fn is_root() -> bool {
    // The owner of /proc/self is the process's effective user: no unsafe
    // call needed for geteuid.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The warnings to give at start: root, and each secret-holding file
/// readable by others (`config_file` when one is read, and the service's
/// environment file when it exists).
pub fn warnings(config_file: Option<&Path>) -> Vec<String> {
    let mut out = Vec::new();
    if is_root() {
        out.push(
            "running as root: the agent needs only read access to the logs; the packaged service runs it as the user cerberus".to_owned(),
        );
    }
    let files = config_file
        .into_iter()
        .map(|p| (p, false))
        .chain(std::iter::once((Path::new(SERVICE_ENV_FILE), true)));
    for (path, env) in files {
        if let Some(w) = readable_secret(path, env) {
            out.push(w);
        }
    }
    out
}

/// A warning if `path` holds a secret setting and every user may read it.
/// `env`: the file is `KEY=value` lines (`CERBERUS_TOKEN=…`), else TOML.
fn readable_secret(path: &Path, env: bool) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.mode() & 0o004 == 0 {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let names = holds_secret(&text, env)?;
    Some(format!(
        "{} sets {names} and every user may read it (mode {:04o}): chmod 0640 {0} and chown root:cerberus {0}",
        path.display(),
        meta.mode() & 0o7777
    ))
}

/// Which secret settings the text sets (`None`: none). Values are never
/// looked at beyond being there.
fn holds_secret(text: &str, env: bool) -> Option<String> {
    let set: Vec<&str> = SECRET_KEYS
        .iter()
        .copied()
        .filter(|key| {
            text.lines().any(|line| {
                let line = line.trim_start();
                let line = if env {
                    let line = line.strip_prefix("export ").unwrap_or(line);
                    match line.strip_prefix("CERBERUS_") {
                        Some(rest) => rest,
                        None => return false,
                    }
                } else {
                    line
                };
                let Some((name, value)) = line.split_once('=') else {
                    return false;
                };
                let value = value.trim().trim_matches(['"', '\'']);
                name.trim().eq_ignore_ascii_case(key) && !value.is_empty()
            })
        })
        .collect();
    (!set.is_empty()).then(|| set.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_are_found_in_both_kinds_of_file_and_comments_do_not_count() {
        assert_eq!(
            holds_secret("log = \"/x\"\ntoken = \"abc\"\n", false).as_deref(),
            Some("token")
        );
        assert_eq!(holds_secret("# token = \"abc\"\n", false), None);
        assert_eq!(holds_secret("token = \"\"\n", false), None);
        assert_eq!(
            holds_secret("CERBERUS_SECRET_KEY=k\nexport CERBERUS_TOKEN=t\n", true).as_deref(),
            Some("token and secret_key")
        );
        assert_eq!(holds_secret("TOKEN=t\n", true), None);
    }

    #[test]
    fn a_world_readable_file_with_a_token_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "token = \"abc\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = readable_secret(&path, false).expect("a warning");
        assert!(w.contains("chmod 0640") && w.contains("0644"), "{w}");
        assert!(!w.contains("abc"), "the value must never be shown: {w}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(readable_secret(&path, false), None);
    }
}
