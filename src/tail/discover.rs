//! Which files the `--log` values name now, and where rotation put the old
//! ones.
//!
//! A `--log` value is a path or a glob. Globs are expanded at every scan, so
//! files that appear later are picked up. Rotated siblings of a path are the
//! files beside it whose name starts with its name (`access.log.1`,
//! `access.log-20261125`), except compressed ones, which cannot be tailed.
//! Gzip-compressed rotations are looked into only to finish a file that was
//! compressed before the agent had read it to its end
//! ([`compressed_copy`]).

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::identity::{FINGERPRINT_BYTES, FileIdentity, Fingerprint};

/// Extensions of compressed rotations, which are never read.
const COMPRESSED: &[&str] = &["gz", "bz2", "xz", "zst", "lz4", "zip", "br"];

/// True when `value` is a glob rather than a plain path.
pub(crate) fn is_glob(value: &str) -> bool {
    value.contains(['*', '?', '['])
}

/// A file a glob matched and that is not followed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Skipped {
    pub path: PathBuf,
    pub why: String,
}

/// The files `value` names now: the path itself (whether or not it exists
/// yet; named explicitly, it is followed through a symbolic link), or the
/// regular files a glob matches, and those it matched but does not follow:
/// anything not a regular file (a FIFO would block the open, a device
/// never end), and symbolic links whose target is outside the glob's folder
/// and every `follow_into` folder (a link planted in a log folder must not
/// read `/etc/cerberus/agent.env` into the agent's messages). None that an
/// `exclude` glob matches.
pub(crate) fn expand(
    value: &str,
    exclude: &[glob::Pattern],
    follow_into: &[PathBuf],
) -> (Vec<PathBuf>, Vec<Skipped>) {
    let excluded = |p: &Path| exclude.iter().any(|x| x.matches_path(p));
    if !is_glob(value) {
        let path = PathBuf::from(value);
        return if excluded(&path) {
            (Vec::new(), Vec::new())
        } else {
            (vec![path], Vec::new())
        };
    }
    let Ok(paths) = glob::glob(value) else {
        return (Vec::new(), Vec::new());
    };
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    let home = watch_dir(value);
    for p in paths.filter_map(Result::ok) {
        if is_compressed(&p) || excluded(&p) {
            continue;
        }
        match followable(&p, &home, follow_into) {
            Ok(()) => found.push(p),
            Err(why) => skipped.push(Skipped { path: p, why }),
        }
    }
    found.sort();
    (found, skipped)
}

/// Whether a file a glob found may be followed (see [`expand`]).
fn followable(path: &Path, home: &Path, follow_into: &[PathBuf]) -> Result<(), String> {
    let link = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(format!("not a regular file ({})", kind_of(&meta)));
    }
    if !link.file_type().is_symlink() {
        return Ok(());
    }
    let target = std::fs::canonicalize(path).map_err(|e| e.to_string())?;
    let inside = |dir: &Path| std::fs::canonicalize(dir).is_ok_and(|dir| target.starts_with(dir));
    if inside(home) || follow_into.iter().any(|d| inside(d)) {
        Ok(())
    } else {
        Err(format!(
            "a symbolic link to {}, outside {} (name it with --log, or add its folder to follow_symlinks_into)",
            target.display(),
            home.display()
        ))
    }
}

/// What a file that is not a regular file is, for messages.
pub(crate) fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Opens a log for reading without ever blocking (a FIFO put in a file's
/// place would block `open` until a writer came): `O_NONBLOCK`, which
/// changes nothing for a regular file, and anything else refused.
pub fn open_regular(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK on Linux (x86, ARM); std has no name for it.
    const O_NONBLOCK: i32 = 0o4000;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({}): not followed", kind_of(&meta)),
        ));
    }
    Ok(file)
}

/// The folder to watch for `value`: the parent of a path, or the deepest
/// folder of a glob that has no glob characters.
pub(crate) fn watch_dir(value: &str) -> PathBuf {
    let path = Path::new(value);
    let mut dir = PathBuf::new();
    let components: Vec<_> = path.components().collect();
    for (i, c) in components.iter().enumerate() {
        let text = c.as_os_str().to_string_lossy();
        if is_glob(&text) || i + 1 == components.len() {
            break;
        }
        dir.push(c);
    }
    if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    }
}

/// The folders the folder part of glob `value` matches now, at every
/// depth below its first glob character (`/var/log/pods/*/*/*.log`: every
/// `/var/log/pods/*` and `/var/log/pods/*/*`), at most `max`.
pub(crate) fn glob_dirs(value: &str, max: usize) -> Vec<PathBuf> {
    let Some(parent) = Path::new(value).parent() else {
        return Vec::new();
    };
    let mut prefix = PathBuf::new();
    let mut out = Vec::new();
    let mut globbed = false;
    for c in parent.components() {
        prefix.push(c);
        globbed |= is_glob(&c.as_os_str().to_string_lossy());
        if !globbed {
            continue;
        }
        let Some(pattern) = prefix.to_str() else {
            return out;
        };
        let Ok(paths) = glob::glob(pattern) else {
            return out;
        };
        for p in paths.filter_map(Result::ok).filter(|p| p.is_dir()) {
            if out.len() >= max {
                return out;
            }
            out.push(p);
        }
    }
    out
}

fn is_compressed(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| COMPRESSED.contains(&e))
}

/// The kubelet compresses a rotated container log into `<name>.tmp` and
/// renames it `<name>.gz` when done: gzip bytes, never lines.
fn is_being_compressed(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "tmp")
}

/// A rotated sibling with what identifies it.
#[derive(Debug, Clone)]
pub(crate) struct Sibling {
    pub path: PathBuf,
    pub identity: FileIdentity,
    pub len: u64,
    pub modified: std::time::SystemTime,
}

/// Folder listings, kept while a folder does not change: finding the
/// rotated siblings of each of thousands of logs in one folder would read
/// the whole folder once per log.
#[derive(Debug, Default)]
pub(crate) struct Listings {
    /// Per folder: its modification time when listed, and its names.
    by_dir: std::collections::HashMap<PathBuf, (std::time::SystemTime, Names)>,
}

/// A folder's entry names, sorted as bytes.
type Names = std::sync::Arc<Vec<Vec<u8>>>;

/// A listing is reused only when the folder's modification time has not
/// changed and is older than this: a change within the file system's
/// timestamp granularity of the listing could otherwise go unseen.
const LISTING_SETTLED: std::time::Duration = std::time::Duration::from_secs(1);

impl Listings {
    /// The names in `dir`, sorted (as bytes).
    fn names(&mut self, dir: &Path) -> io::Result<Names> {
        let modified = std::fs::metadata(dir)?.modified()?;
        if let Some((seen, names)) = self.by_dir.get(dir)
            && *seen == modified
            && modified.elapsed().is_ok_and(|age| age >= LISTING_SETTLED)
        {
            return Ok(names.clone());
        }
        let mut names: Vec<Vec<u8>> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.file_name().into_encoded_bytes())
            .collect();
        names.sort_unstable();
        let names = std::sync::Arc::new(names);
        if self.by_dir.len() > 1024 {
            self.by_dir.clear();
        }
        self.by_dir
            .insert(dir.to_owned(), (modified, names.clone()));
        Ok(names)
    }
}

/// The rotated siblings of `path` (not `path` itself, not compressed ones).
pub(crate) fn siblings(listings: &mut Listings, path: &Path) -> io::Result<Vec<Sibling>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Vec::new());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let name = name.as_encoded_bytes();
    let names = listings.names(dir)?;
    let first = names.partition_point(|n| n.as_slice() < name);
    let mut out = Vec::new();
    for file_name in names[first..].iter().take_while(|n| n.starts_with(name)) {
        if file_name.as_slice() == name {
            continue;
        }
        // (On Unix any bytes are a file name: these came from one.)
        let p = dir.join(std::ffi::OsStr::from_bytes(file_name));
        if is_compressed(&p) || is_being_compressed(&p) {
            continue;
        }
        // Rotations are renamed files, never links: a link beside the log
        // is not read as one.
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        out.push(Sibling {
            identity: FileIdentity {
                device: meta.dev(),
                inode: meta.ino(),
                fingerprint: head_fingerprint(&p),
            },
            len: meta.len(),
            modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
            path: p,
        });
    }
    Ok(out)
}

/// The fingerprint of the file at `path`, read from its first bytes.
pub(crate) fn head_fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::io::Read;
    let mut f = open_regular(path).ok()?;
    let mut head = [0u8; FINGERPRINT_BYTES];
    let mut filled = 0;
    while filled < head.len() {
        match f.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(_) => return None,
        }
    }
    Fingerprint::of_head(&head[..filled])
}

/// A gzip-compressed rotated sibling of `path` whose content starts with
/// the first line `wanted` is the fingerprint of (logrotate's `compress`,
/// `delaycompress`): its path, its content decompressed into an unnamed
/// temporary file (gone once closed) positioned at its start, and that
/// content's length. Each candidate is opened once, so a rename by
/// logrotate meanwhile cannot swap the content for another file's.
pub(crate) fn compressed_copy(
    path: &Path,
    wanted: impl Fn(Fingerprint) -> bool,
) -> Option<(PathBuf, std::fs::File, u64)> {
    gz_candidates(path).into_iter().find_map(|gz| {
        let (content, len) = decompress_if(&gz, &wanted, MAX_DECOMPRESSED).ok()??;
        if len >= MAX_DECOMPRESSED {
            tracing::warn!(
                "{}: its content is larger than {} MiB decompressed: only that much is read (a planted file, or a rotation far larger than logs are)",
                gz.display(),
                MAX_DECOMPRESSED >> 20
            );
        }
        Some((gz, content, len))
    })
}

/// The gzip-compressed rotated siblings of `path` written at or after
/// `newer_than`, with the fingerprint of their content and when they were
/// written (only those are decompressed, and only their first bytes).
pub(crate) fn compressed_siblings(
    path: &Path,
    newer_than: std::time::SystemTime,
) -> Vec<(PathBuf, Fingerprint, std::time::SystemTime)> {
    use std::io::Read;
    gz_candidates(path)
        .into_iter()
        .filter_map(|gz| {
            let file = std::fs::File::open(&gz).ok()?;
            let modified = file.metadata().ok()?.modified().ok()?;
            if modified < newer_than {
                return None;
            }
            let mut unzipped = flate2::read::MultiGzDecoder::new(file);
            let mut head = [0u8; FINGERPRINT_BYTES];
            let mut filled = 0;
            while filled < head.len() {
                match unzipped.read(&mut head[filled..]).ok()? {
                    0 => break,
                    n => filled += n,
                }
            }
            Some((gz, Fingerprint::of_head(&head[..filled])?, modified))
        })
        .collect()
}

/// The `.gz` files beside `path` whose name starts with its name, sorted.
fn gz_candidates(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut candidates: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "gz")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(name.as_ref()))
        })
        .collect();
    candidates.sort();
    candidates
}

/// The content of the gzip file at `path` and its length, if the
/// fingerprint of its content satisfies `wanted` (decompressing no further
/// otherwise).
/// At most this much of a compressed rotation is decompressed (into a
/// temporary file): a small planted `.gz` must not fill the disk.
const MAX_DECOMPRESSED: u64 = 1 << 30;

fn decompress_if(
    path: &Path,
    wanted: impl Fn(Fingerprint) -> bool,
    limit: u64,
) -> io::Result<Option<(std::fs::File, u64)>> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut unzipped = flate2::read::MultiGzDecoder::new(std::fs::File::open(path)?);
    let mut head = [0u8; FINGERPRINT_BYTES];
    let mut filled = 0;
    while filled < head.len() {
        match unzipped.read(&mut head[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    if !Fingerprint::of_head(&head[..filled]).is_some_and(wanted) {
        return Ok(None);
    }
    let mut out = tempfile::tempfile()?;
    out.write_all(&head[..filled])?;
    let rest = io::copy(
        &mut unzipped.take(limit.saturating_sub(filled as u64)),
        &mut out,
    )?;
    out.seek(SeekFrom::Start(0))?;
    Ok(Some((out, filled as u64 + rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_dir_of_paths_and_globs() {
        assert_eq!(
            watch_dir("/var/log/nginx/access.log"),
            PathBuf::from("/var/log/nginx")
        );
        assert_eq!(
            watch_dir("/var/log/nginx/*access.log"),
            PathBuf::from("/var/log/nginx")
        );
        assert_eq!(
            watch_dir("/var/log/*/access.log"),
            PathBuf::from("/var/log")
        );
        assert_eq!(watch_dir("access.log"), PathBuf::from("."));
    }

    #[test]
    fn a_compressed_copy_is_decompressed_within_the_limit() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let gz = d.path().join("access.log.1.gz");
        let mut w = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::fast(),
        );
        w.write_all(b"first line\n").unwrap();
        w.write_all(&vec![b'x'; 1 << 20]).unwrap();
        w.finish().unwrap();
        let (_, len) = decompress_if(&gz, |_| true, 4096).unwrap().unwrap();
        assert_eq!(len, 4096, "a bomb stops at the limit");
        let (_, len) = decompress_if(&gz, |_| true, u64::MAX).unwrap().unwrap();
        assert_eq!(len, 11 + (1 << 20));
    }

    #[test]
    fn a_globs_folders_are_found_at_every_depth() {
        let d = tempfile::tempdir().unwrap();
        for sub in ["ns_a_1/web", "ns_b_2/web", "ns_b_2/side"] {
            std::fs::create_dir_all(d.path().join(sub)).unwrap();
        }
        std::fs::write(d.path().join("ns_a_1/not-a-folder"), "").unwrap();
        let value = format!("{}/*/*/*.log", d.path().display());
        let mut dirs = glob_dirs(&value, 100);
        dirs.sort();
        let rel: Vec<String> = dirs
            .iter()
            .map(|p| p.strip_prefix(d.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            rel,
            [
                "ns_a_1",
                "ns_a_1/web",
                "ns_b_2",
                "ns_b_2/side",
                "ns_b_2/web"
            ]
        );
        assert_eq!(glob_dirs(&value, 2).len(), 2, "at most max");
        assert!(
            glob_dirs("/var/log/nginx/*.log", 100).is_empty(),
            "no glob in the folder part"
        );
    }

    #[test]
    fn siblings_are_rotations_but_not_compressed_ones() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "access.log",
            "access.log.1",
            "access.log-20261125",
            "access.log.2.gz",
            "error.log",
        ] {
            std::fs::write(dir.path().join(name), "line\n").unwrap();
        }
        let names: Vec<String> = siblings(&mut Listings::default(), &dir.path().join("access.log"))
            .unwrap()
            .into_iter()
            .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["access.log-20261125", "access.log.1"]);
    }
}
