//! What would let the agent read a file it may not read: which group to
//! join, or which ACL to set. Log files are often `0640 root:adm` (Debian's
//! nginx and Apache), and logrotate's `create` makes each new file so.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A sentence saying how to give the agent read access to `path`.
pub fn hint(path: &Path) -> String {
    let user = user_name().unwrap_or_else(|| "the agent's user".into());
    let Ok(meta) = std::fs::metadata(path) else {
        return format!("{user} needs read permission on it and search permission on its folders");
    };
    let acl = format!("setfacl -m u:{user}:r {}", path.display());
    if meta.mode() & 0o040 != 0 {
        let group = group_name(meta.gid()).unwrap_or_else(|| meta.gid().to_string());
        format!(
            "its group {group} may read it: add {user} to {group} (usermod -aG {group} {user}, then restart the agent), or grant read with an ACL: {acl} (a rotation's new file needs it again: use a default ACL on the folder, setfacl -d -m u:{user}:r)"
        )
    } else {
        format!(
            "only its owner may read it: grant read with an ACL: {acl} (for the files rotations create, a default ACL on the folder: setfacl -d -m u:{user}:r), or let logrotate create them readable by a group {user} is in"
        )
    }
}

/// The name of the user the agent runs as (from /proc and /etc/passwd).
fn user_name() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .to_owned();
    name_with_id("/etc/passwd", &uid)
}

fn group_name(gid: u32) -> Option<String> {
    name_with_id("/etc/group", &gid.to_string())
}

/// The first field of the line of a passwd-style file whose third field is
/// `id`.
fn name_with_id(file: &str, id: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)? == id).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_group_readable_file_names_its_group_and_an_acl() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::fs::write(&path, "x\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let gid = std::fs::metadata(&path).unwrap().gid();
        let group = group_name(gid).unwrap_or_else(|| gid.to_string());
        let hint = hint(&path);
        assert!(hint.contains(&format!("usermod -aG {group}")), "{hint}");
        assert!(hint.contains("setfacl -m u:"), "{hint}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let hint = super::hint(&path);
        assert!(
            hint.contains("only its owner") && hint.contains("setfacl"),
            "{hint}"
        );
    }
}
