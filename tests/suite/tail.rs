//! The tailer on real files in temporary folders: every way servers and
//! logrotate write, rotate and truncate, and restarts from checkpoints.

use crate::common;

use std::fs;
use std::time::Duration;

use cerberus_agent::tail::TailOptions;
use common::tail_harness::{Harness, lines, quick};

/// `lines(prefix, n)` for each part, one after the other.
fn concat(parts: &[(&str, usize)]) -> Vec<String> {
    parts.iter().flat_map(|(p, n)| lines(p, *n)).collect()
}

fn assert_exactly_once(h: &Harness, expected: &[String]) {
    let counts = h.counts();
    for l in expected {
        assert_eq!(
            counts.get(l),
            Some(&1),
            "line {l} must come out exactly once; got {:?}",
            counts.get(l)
        );
    }
    assert_eq!(h.out.len(), expected.len(), "nothing else comes out");
}

#[test]
fn appended_lines_come_out_in_order() {
    let mut h = Harness::new(quick());
    h.append(&h.log.clone(), &lines("a", 3));
    h.start();
    h.poll(true);
    h.append(&h.log.clone(), &lines("b", 3));
    h.poll(true);
    let want = concat(&[("a", 3), ("b", 3)]);
    assert_eq!(h.out, want);
}

#[test]
fn a_burst_of_100k_lines() {
    let mut h = Harness::new(quick());
    h.start();
    let burst = lines("burst", 100_000);
    h.append(&h.log.clone(), &burst);
    h.poll(true);
    assert_eq!(h.out, burst);
}

#[test]
fn a_new_file_starts_at_its_end_unless_from_beginning() {
    let mut h = Harness::new(TailOptions {
        from_beginning: false,
        ..quick()
    });
    h.append(&h.log.clone(), &lines("old", 5));
    h.start();
    h.append(&h.log.clone(), &lines("new", 2));
    h.poll(true);
    assert_eq!(h.out, lines("new", 2));
}

#[test]
fn a_file_appearing_after_start_is_read_from_its_beginning() {
    let mut h = Harness::new(TailOptions {
        from_beginning: false,
        ..quick()
    });
    h.start();
    h.poll(true);
    h.append(&h.log.clone(), &lines("late", 4));
    h.poll(true);
    assert_eq!(h.out, lines("late", 4));
}

#[test]
fn rename_rotation_with_lines_before_and_after() {
    let mut h = Harness::new(TailOptions {
        rotate_wait: Duration::from_secs(3600),
        ..quick()
    });
    let log = h.log.clone();
    h.append(&log, &lines("before", 3));
    h.start();
    h.poll(true);
    h.append(&log, &lines("unread", 2));
    fs::rename(&log, h.rotated(1)).unwrap();
    // The server still writes to the renamed file until it reopens.
    h.append(&h.rotated(1), &lines("after-rename", 2));
    h.poll(true);
    h.append(&h.rotated(1), &lines("late-old", 1));
    h.append(&log, &lines("new-file", 3));
    h.poll(true);
    let want = concat(&[
        ("before", 3),
        ("unread", 2),
        ("after-rename", 2),
        ("late-old", 1),
        ("new-file", 3),
    ]);
    assert_exactly_once(&h, &want);
}

#[test]
fn copytruncate_with_unread_lines_reads_them_from_the_copy() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.append(&log, &lines("first", 3));
    h.start();
    h.poll(true);
    h.append(&log, &lines("unread", 3));
    h.copy(&log, &h.rotated(1));
    h.truncate(&log);
    h.append(&log, &lines("after", 2));
    h.poll(true);
    let want = concat(&[("first", 3), ("unread", 3), ("after", 2)]);
    assert_exactly_once(&h, &want);
}

#[test]
fn truncation_then_writes_past_the_old_offset_is_noticed() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.append(&log, &lines("x", 2));
    h.start();
    h.poll(true);
    h.truncate(&log);
    h.append(&log, &lines("longer-than-before", 5));
    h.poll(true);
    let want = concat(&[("x", 2), ("longer-than-before", 5)]);
    assert_exactly_once(&h, &want);
}

#[test]
fn a_file_deleted_while_being_read_is_read_to_its_end() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.append(&log, &lines("a", 2));
    h.start();
    h.poll(true);
    // Keep writing through an open handle after the name is gone.
    let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
    fs::remove_file(&log).unwrap();
    use std::io::Write;
    writeln!(f, "written-after-delete").unwrap();
    drop(f);
    h.poll(true);
    let mut want = lines("a", 2);
    want.push("written-after-delete".into());
    assert_exactly_once(&h, &want);
}

#[test]
fn inode_reuse_is_not_mistaken_for_the_old_file() {
    let mut h = Harness::new(TailOptions {
        from_beginning: false,
        ..quick()
    });
    let log = h.log.clone();
    h.append(&log, &lines("one", 10));
    h.start();
    h.append(&log, &lines("two", 1));
    h.poll(true);
    h.stop();
    // Replace the file; the filesystem may give the new file the same inode.
    fs::remove_file(&log).unwrap();
    h.append(&log, &lines("zzz-other-file", 12));
    h.start();
    h.poll(true);
    // Same inode or not, the file at the path is not the checkpointed one
    // (its first line differs): it was created while the agent was stopped
    // and is read whole, not resumed at the old offset (which would cut
    // its lines).
    let new: Vec<String> = h
        .out
        .iter()
        .filter(|l| l.starts_with("zzz"))
        .cloned()
        .collect();
    assert_eq!(new, lines("zzz-other-file", 12));
}

#[test]
fn restart_from_checkpoint_loses_and_repeats_nothing() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.append(&log, &lines("a", 100));
    h.start();
    h.poll(true);
    h.stop();
    h.append(&log, &lines("while-stopped", 50));
    h.start();
    h.poll(true);
    let want = concat(&[("a", 100), ("while-stopped", 50)]);
    assert_exactly_once(&h, &want);
}

#[test]
fn kill_without_saving_repeats_but_never_loses() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.append(&log, &lines("saved", 10));
    h.start();
    h.poll(true);
    h.append(&log, &lines("unsaved", 10));
    h.poll(false);
    h.kill();
    h.start();
    h.poll(true);
    let c = h.counts();
    for l in lines("saved", 10) {
        assert_eq!(c[&l], 1);
    }
    for l in lines("unsaved", 10) {
        assert_eq!(c[&l], 2, "delivered but not checkpointed: sent again");
    }
}

#[test]
fn rename_rotation_while_stopped_is_finished_from_the_rotated_file() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.append(&log, &lines("a", 5));
    h.start();
    h.poll(true);
    h.stop();
    h.append(&log, &lines("unread", 5));
    fs::rename(&log, h.rotated(1)).unwrap();
    h.append(&log, &lines("new", 5));
    h.start();
    h.poll(true);
    let want = concat(&[("a", 5), ("unread", 5), ("new", 5)]);
    assert_exactly_once(&h, &want);
}

#[test]
fn two_rotations_while_stopped_lose_nothing() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.append(&log, &lines("a", 5));
    h.start();
    h.poll(true);
    h.stop();
    h.append(&log, &lines("unread", 5));
    fs::rename(&log, h.rotated(2)).unwrap();
    h.append(&log, &lines("middle", 5));
    fs::rename(&log, h.rotated(1)).unwrap();
    h.append(&log, &lines("new", 5));
    h.start();
    h.poll(true);
    let want = concat(&[("a", 5), ("unread", 5), ("middle", 5), ("new", 5)]);
    assert_exactly_once(&h, &want);
}

#[test]
fn copytruncate_while_stopped_is_finished_from_the_copy() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.append(&log, &lines("a", 5));
    h.start();
    h.poll(true);
    h.stop();
    h.append(&log, &lines("unread", 5));
    h.copy(&log, &h.rotated(1));
    h.truncate(&log);
    h.append(&log, &lines("new", 2));
    h.start();
    h.poll(true);
    let want = concat(&[("a", 5), ("unread", 5), ("new", 2)]);
    assert_exactly_once(&h, &want);
}

#[test]
fn a_line_sent_again_from_the_copytruncate_copy_keeps_its_event_id() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.append(&log, &lines("a", 5));
    h.start();
    h.poll(true);
    // Delivered from the live file, but the agent dies before saving.
    h.append(&log, &lines("b", 5));
    h.poll(false);
    h.kill();
    h.copy(&log, &h.rotated(1));
    h.truncate(&log);
    h.append(&log, &lines("new", 2));
    h.start();
    h.poll(true);
    let counts = h.counts();
    assert!(
        lines("b", 5).iter().all(|l| counts.get(l) == Some(&2)),
        "b lines are sent again, from the copy: {counts:?}"
    );
    assert_eq!(h.unstable_ids(), Vec::<String>::new());
    // And two different lines never share an id.
    let mut ids: Vec<(String, (u64, u64))> = h.out.iter().cloned().zip(h.ids.clone()).collect();
    ids.sort();
    ids.dedup();
    let mut only_ids: Vec<(u64, u64)> = ids.iter().map(|(_, id)| *id).collect();
    only_ids.sort();
    only_ids.dedup();
    assert_eq!(only_ids.len(), ids.len(), "one id per distinct line");
}

#[test]
fn a_copy_reached_by_two_checkpoints_is_read_once() {
    // The live file's lines b are in flight when copytruncate happens; the
    // copy is then read in part before the agent dies. At restart both the
    // old file's checkpoint (before b) and the copy's (in c) lead to the
    // copy: it must be read once, from the lower one.
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.append(&log, &lines("a", 5));
    h.start();
    h.poll(true);
    h.append(&log, &lines("b", 5));
    h.poll_acking(true, |l| !l.starts_with('b'));
    h.append(&log, &lines("c", 20));
    h.copy(&log, &h.rotated(1));
    h.truncate(&log);
    h.append(&log, &lines("new", 2));
    // The copy is read from after b; only c-0 … c-9 are acknowledged.
    h.poll_acking(true, |l| {
        !l.starts_with('b') && (!l.starts_with('c') || l.len() == 3)
    });
    h.kill();
    h.start();
    h.poll(true);
    let counts = h.counts();
    for l in concat(&[("b", 5), ("c", 20)]) {
        assert!(
            (1..=2).contains(counts.get(&l).unwrap_or(&0)),
            "{l} comes out once or twice (once before the crash, once after): {counts:?}"
        );
    }
    for l in lines("c", 20).iter().skip(10) {
        assert_eq!(counts.get(l), Some(&2), "{l}: read once after the restart");
    }
    assert_eq!(h.unstable_ids(), Vec::<String>::new());
}

#[test]
fn after_a_corrupt_checkpoint_file_nothing_undelivered_is_skipped() {
    // Not reading from the beginning: a file found at start would begin at
    // its end. But with the checkpoints lost, what was delivered is
    // unknown: the file and its rotations are read again, whole.
    let mut h = Harness::new(TailOptions {
        rotate_wait: Duration::ZERO,
        ..TailOptions::default()
    });
    let log = h.log.clone();
    h.append(&log, &[]);
    h.start();
    h.append(&log, &lines("a", 3));
    h.poll(true);
    h.kill();
    h.append(&log, &lines("b", 3));
    fs::rename(&log, h.rotated(1)).unwrap();
    h.append(&log, &lines("c", 3));
    h.cut_checkpoint_file();
    h.start();
    h.poll(true);
    let counts = h.counts();
    for l in concat(&[("a", 3), ("b", 3), ("c", 3)]) {
        assert!(counts.contains_key(&l), "{l} is not lost: {counts:?}");
    }
    assert_eq!(h.unstable_ids(), Vec::<String>::new());
}

#[test]
fn a_corrupt_checkpoint_file_is_set_aside_not_fatal() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.append(&log, &lines("a", 3));
    fs::write(
        h.state.path().join("checkpoints.json"),
        b"{\"version\": 1, \"files\": [trunc",
    )
    .unwrap();
    h.start();
    h.poll(true);
    assert_eq!(h.out, lines("a", 3));
    let names: Vec<String> = fs::read_dir(h.state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("checkpoints.json.corrupt-")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "checkpoints.json"),
        "a fresh store is written: {names:?}"
    );
}

#[test]
fn partial_lines_wait_for_their_newline() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.start();
    h.write_raw(&log, b"complete\nhalf-");
    h.poll(true);
    assert_eq!(h.out, vec!["complete"]);
    h.stop();
    h.start();
    h.write_raw(&log, b"done\n");
    h.poll(true);
    assert_eq!(
        h.out,
        vec!["complete", "half-done"],
        "the partial line is not lost or split by a restart"
    );
}

#[test]
fn a_partial_line_in_a_rotated_file_is_emitted_as_is() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.start();
    h.write_raw(&log, b"whole\nno-newline");
    h.poll(true);
    fs::rename(&log, h.rotated(1)).unwrap();
    h.poll(true);
    assert_eq!(h.out, vec!["whole", "no-newline"]);
}

#[test]
fn an_over_long_line_is_cut_and_the_next_line_is_whole() {
    let mut h = Harness::new(TailOptions {
        max_line: 1024,
        ..quick()
    });
    let log = h.log.clone();
    h.start();
    let long = "L".repeat(1_000_000);
    h.append(&log, &[long, "next".into()]);
    h.poll(true);
    assert_eq!(h.out.len(), 2);
    assert_eq!(h.out[0].len(), 1024);
    assert_eq!(h.out[1], "next");
}

#[test]
fn globs_pick_up_files_that_appear_later() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let options = TailOptions {
        logs: vec![format!("{}/*access.log", dir.path().display())],
        ..quick()
    };
    let store = cerberus_agent::tail::CheckpointStore::open(state.path()).unwrap();
    let mut t = cerberus_agent::tail::Tailer::new(options, store);
    t.scan().unwrap();
    fs::write(dir.path().join("shop-access.log"), "s1\n").unwrap();
    fs::write(dir.path().join("api-access.log"), "a1\n").unwrap();
    fs::write(dir.path().join("error.log"), "e1\n").unwrap();
    t.scan().unwrap();
    let mut out = Vec::new();
    t.poll(100, &mut |l| {
        out.push(String::from_utf8_lossy(l.line.bytes).into_owned());
        cerberus_agent::source::Handling::Done
    })
    .unwrap();
    out.sort();
    assert_eq!(out, vec!["a1", "s1"]);
}

/// gzip the file at `path` into `path.gz` with the system's gzip, as
/// logrotate's `compress` does.
fn gzip(path: &std::path::Path) {
    let status = std::process::Command::new("gzip")
        .arg("-f")
        .arg(path)
        .status()
        .expect("gzip runs");
    assert!(status.success());
}

#[test]
fn a_rotated_file_compressed_while_stopped_is_finished_from_its_compressed_copy() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.append(&log, &lines("a", 5));
    h.start();
    h.poll(true);
    h.append(&log, &lines("b", 5));
    h.kill();
    fs::rename(&log, h.rotated(1)).unwrap();
    gzip(&h.rotated(1));
    h.append(&log, &lines("new", 2));
    h.start();
    h.poll(true);
    assert_exactly_once(&h, &concat(&[("a", 5), ("b", 5), ("new", 2)]));
    // Read from the decompressed copy, the lines keep the ids of their file.
    h.stop();
    h.start();
    h.poll(true);
    assert_exactly_once(&h, &concat(&[("a", 5), ("b", 5), ("new", 2)]));
}

#[test]
fn a_rotated_file_read_to_its_end_then_compressed_is_not_read_again() {
    // Kept open after rotation (rotate_wait), read to its end, and the
    // agent dies before it is closed: its checkpoint is not finished. Then
    // delaycompress compresses it.
    let mut h = Harness::new(TailOptions {
        rotate_wait: Duration::from_secs(3600),
        from_beginning: true,
        ..TailOptions::default()
    });
    let log = h.log.clone();
    h.append(&log, &lines("a", 5));
    h.start();
    h.poll(true);
    fs::rename(&log, h.rotated(1)).unwrap();
    h.append(&log, &lines("new", 2));
    h.poll(true);
    h.kill();
    gzip(&h.rotated(1));
    h.append(&log, &lines("more", 2));
    let said = logged_during(|| {
        h.start();
        h.poll(true);
    });
    assert_exactly_once(&h, &concat(&[("a", 5), ("new", 2), ("more", 2)]));
    assert!(
        !said.contains("WARN") && !said.contains("ERROR"),
        "no alarm for a file read to its end: {said}"
    );
}

/// While the agent was stopped, the file it was reading was rotated, and
/// a new file was written, rotated and compressed after it (logrotate
/// keeps the time the file was last written on its `.gz`). At the start,
/// finishing the first file's checkpoint must not hide the second: which
/// `.gz` files are new is decided by when the checkpoints were saved, not
/// by what this start changed in them. Seen in the system test: a state
/// folder read-only for a while, then a kill, lost a whole rotation.
#[test]
fn a_file_written_rotated_and_compressed_while_stopped_is_read_after_the_one_before_it() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.append(&log, &lines("a", 5));
    h.start();
    h.poll(true);
    h.append(&log, &lines("b", 3));
    h.kill();
    // Stopped for 100 s: the checkpoints were saved that long ago.
    h.age_checkpoints(100);
    // Rotated (create), the new file written for a while.
    fs::rename(&log, h.rotated(1)).unwrap();
    h.written_ago(&h.rotated(1), 90);
    h.append(&log, &lines("c", 4));
    h.written_ago(&log, 60);
    // Rotated again, delaycompress compressing the first.
    fs::rename(h.rotated(1), h.rotated(2)).unwrap();
    gzip(&h.rotated(2));
    fs::rename(&log, h.rotated(1)).unwrap();
    h.append(&log, &lines("d", 2));
    h.written_ago(&log, 30);
    // And again: the second file compressed too.
    fs::rename(
        h.dir.path().join("access.log.2.gz"),
        h.dir.path().join("access.log.3.gz"),
    )
    .unwrap();
    fs::rename(h.rotated(1), h.rotated(2)).unwrap();
    gzip(&h.rotated(2));
    fs::rename(&log, h.rotated(1)).unwrap();
    h.append(&log, &lines("e", 2));
    h.start();
    h.poll(true);
    assert_exactly_once(
        &h,
        &concat(&[("a", 5), ("b", 3), ("c", 4), ("d", 2), ("e", 2)]),
    );
}

/// Both saves of the checkpoints unreadable (a filesystem crash): the
/// files beside the log are read again from their start, and so are the
/// compressed rotations written after the lost save (nothing can have
/// delivered them); older ones, which logrotate keeps for days, are not
/// sent again.
#[test]
fn lost_checkpoints_read_the_rotations_compressed_since_and_not_the_older_ones() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    let dir = h.dir.path().to_owned();
    let gz = |n: usize| dir.join(format!("access.log.{n}.gz"));
    h.append(&log, &lines("a", 5));
    h.start();
    h.poll(true);
    fs::rename(&log, h.rotated(1)).unwrap();
    h.append(&log, &lines("b", 3));
    h.poll(true);
    fs::rename(h.rotated(1), h.rotated(2)).unwrap();
    gzip(&h.rotated(2));
    // Written days ago, as logrotate's older rotations are, and the live
    // file an hour before the last save.
    h.written_ago(&gz(2), 3 * 24 * 3600);
    h.written_ago(&log, 3600);
    h.poll(true);
    h.kill();
    // While it is down, three rotations (delaycompress): b's file and c's
    // compressed, d's renamed, e written; all that a while ago.
    fs::rename(&log, h.rotated(1)).unwrap();
    h.append(&log, &lines("c", 4));
    fs::rename(gz(2), gz(3)).unwrap();
    fs::rename(h.rotated(1), h.rotated(2)).unwrap();
    gzip(&h.rotated(2));
    fs::rename(&log, h.rotated(1)).unwrap();
    h.append(&log, &lines("d", 2));
    fs::rename(gz(3), gz(4)).unwrap();
    fs::rename(gz(2), gz(3)).unwrap();
    fs::rename(h.rotated(1), h.rotated(2)).unwrap();
    gzip(&h.rotated(2));
    fs::rename(&log, h.rotated(1)).unwrap();
    h.append(&log, &lines("e", 2));
    h.cut_checkpoint_file();
    fs::write(h.state.path().join("checkpoints.json.prev"), b"{\"vers").unwrap();
    h.pass_time_while_stopped(100);
    let before = h.out.len();
    h.start();
    h.poll(true);
    let after: Vec<&String> = h.out[before..].iter().collect();
    for l in lines("c", 4)
        .iter()
        .chain(&lines("d", 2))
        .chain(&lines("e", 2))
    {
        assert!(after.contains(&l), "{l} was lost: {after:?}");
    }
    for l in lines("a", 5).iter().chain(&lines("b", 3)) {
        assert!(
            !after.contains(&l),
            "{l}: an old .gz was read again: {after:?}"
        );
    }
}

/// The agent restarted in the middle of a rotation: the log was renamed,
/// and the server, not reopened yet, writes a few more lines to the old
/// file after the agent started. The renamed file was read to its end
/// before the stop; it is still followed for `rotate_wait`, as any file
/// rotated while the agent runs.
#[test]
fn a_file_renamed_while_stopped_and_written_after_the_start_is_read() {
    let mut h = Harness::new(TailOptions {
        rotate_wait: Duration::from_secs(3600),
        ..quick()
    });
    let log = h.log.clone();
    h.append(&log, &lines("a", 3));
    h.start();
    h.poll(true);
    h.kill();
    fs::rename(&log, h.rotated(1)).unwrap();
    fs::write(&log, b"").unwrap();
    h.start();
    h.poll(true);
    h.append(&h.rotated(1), &lines("late", 2));
    h.append(&log, &lines("new", 2));
    h.poll(true);
    assert_exactly_once(&h, &concat(&[("a", 3), ("late", 2), ("new", 2)]));
}

/// What the tailer logged (at debug and above) while `f` ran on this
/// thread.
fn logged_during(f: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buffer.0.lock().unwrap().clone();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn a_copytruncate_copy_compressed_before_the_truncation_was_seen_is_read_from_the_gz() {
    // The agent reads nothing while the backend is away; meanwhile
    // copytruncate copied and truncated the log, and the next rotation
    // (delaycompress) compressed that copy. The unread lines are only in
    // the .gz now.
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.append(&log, &lines("a", 5));
    h.start();
    h.poll(true);
    h.append(&log, &lines("b", 5));
    h.copy(&log, &h.rotated(1));
    h.truncate(&log);
    h.append(&log, &lines("c", 3));
    fs::rename(h.rotated(1), h.rotated(2)).unwrap();
    gzip(&h.rotated(2));
    fs::rename(&log, h.rotated(1)).unwrap();
    h.append(&log, &lines("d", 2));
    h.poll(true);
    assert_exactly_once(&h, &concat(&[("a", 5), ("b", 5), ("c", 3), ("d", 2)]));
    assert_eq!(h.unstable_ids(), Vec::<String>::new());
}

#[test]
fn a_rotated_file_the_read_budget_did_not_reach_is_not_closed_unread() {
    // After copytruncate and a rename, the copy (many unread lines) comes
    // before the renamed file in the read order: one poll's budget ends in
    // the copy. The renamed file was not read at all; it must not count as
    // "stopped growing" and be closed with its lines unread.
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.append(&log, &lines("a", 5));
    h.start();
    h.poll(true);
    h.append(&log, &lines("b", 2500));
    h.copy(&log, &h.rotated(1));
    h.truncate(&log);
    h.append(&log, &lines("c", 3));
    fs::rename(&log, h.dir.path().join("access.log-renamed")).unwrap();
    h.append(&log, &lines("d", 2));
    h.poll(true);
    assert_exactly_once(&h, &concat(&[("a", 5), ("b", 2500), ("c", 3), ("d", 2)]));
}

/// A file that cannot be read costs only that file: the others are read,
/// the error is counted, and the poll goes on (it used to stop the agent).
#[test]
fn a_file_that_fails_to_read_costs_only_itself() {
    // A process's status file reads while the process lives and fails
    // (ESRCH) once it is gone: a real read error on an open file.
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep starts");
    let status = format!("/proc/{}/status", child.id());
    let mut options = quick();
    options.from_beginning = false;
    let mut h = Harness::new(options);
    h.options.logs.push(status.clone());
    h.start();
    child.kill().expect("kill sleep");
    child.wait().expect("reap sleep");

    h.append(&h.log.clone(), &lines("good", 5));
    h.poll(true);
    assert_eq!(h.out, lines("good", 5));
    let t = h.tailer.as_ref().expect("started");
    assert!(
        t.read_errors() >= 1,
        "the failed read of {status} is counted"
    );

    h.append(&h.log.clone(), &lines("later", 3));
    h.poll(true);
    assert_eq!(h.out, concat(&[("good", 5), ("later", 3)]));
}

/// A file empty at the stop has no checkpoint (no first line to know it
/// by); lines written to it while the agent was stopped are still read: its
/// path was followed, so its content is not from before the agent's time.
#[test]
fn lines_written_while_stopped_to_a_file_empty_at_the_stop_are_read() {
    let mut h = Harness::new(TailOptions {
        rotate_wait: Duration::ZERO,
        ..TailOptions::default()
    });
    let log = h.log.clone();
    h.append(&log, &[]);
    h.start();
    h.poll(true);
    h.stop();
    h.append(&log, &lines("while-stopped", 3));
    h.start();
    h.poll(true);
    assert_eq!(h.out, lines("while-stopped", 3));
}

/// When the store is damaged and the previous save is used, a rotated file
/// that save does not know is read whole, however long ago it was written:
/// the lost save may have been the only one to know of it.
#[test]
fn after_falling_back_to_the_previous_save_unknown_rotated_files_are_read() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.start(); // saves a store that knows no file
    h.append(&log, &lines("a", 3));
    // Written long ago as far as modification times go.
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&log)
        .unwrap()
        .set_modified(old)
        .unwrap();
    h.poll_acking(true, |_| false); // read, nothing delivered; saved
    h.kill();
    let seen_before = h.out.len();
    fs::rename(&log, h.rotated(1)).unwrap();
    h.append(&log, &lines("b", 2));
    h.cut_checkpoint_file();
    h.start();
    h.poll(true);
    let after: Vec<String> = h.out[seen_before..].to_vec();
    for l in concat(&[("a", 3), ("b", 2)]) {
        assert!(
            after.contains(&l),
            "{l} is read after the fallback: {after:?}"
        );
    }
    assert_eq!(h.unstable_ids(), Vec::<String>::new());
}

/// A rotation's new file is opened while still empty (no first line, so no
/// fingerprint), then written to and not read: the backend was away and
/// the agent read nothing. Its checkpoint must exist from the first save
/// after its first line, or a crash and one more rotation lose it: the
/// next start takes every rotated file last written before that save for
/// one it already knows. (Found by the system test, seed
/// 1795630199394224309: 224 requests lost.)
#[test]
fn a_file_opened_empty_and_not_read_before_a_crash_is_read_after_it() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.append(&log, &lines("first", 2));
    h.start();
    h.poll(true);
    // logrotate `create`: the file renamed, a new empty one in its place,
    // which the agent opens at its next look.
    fs::rename(&log, h.rotated(1)).unwrap();
    fs::write(&log, "").unwrap();
    h.poll(true);
    // The server writes; the agent, held back, reads none of it. The
    // lines were written a while before the agent's next save.
    h.append(&log, &lines("unread", 5));
    fs::File::options()
        .write(true)
        .open(&log)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(10))
        .unwrap();
    let t = h.tailer.as_mut().unwrap();
    t.learn_identities();
    t.save_checkpoints(true).unwrap();
    h.kill();
    // Rotated again while the agent is down.
    fs::rename(h.rotated(1), h.rotated(2)).unwrap();
    fs::rename(&log, h.rotated(1)).unwrap();
    fs::write(&log, "").unwrap();
    h.start();
    h.poll(true);
    assert_exactly_once(&h, &concat(&[("first", 2), ("unread", 5)]));
}

/// More files than `max_open_files` under one glob: at most that many are
/// open at once, idle ones are closed and the others read in turn, a
/// closed file that grows (or is rotated) is read on from its checkpoint,
/// and a restart repeats nothing.
#[test]
fn more_files_than_may_be_open_are_read_in_turn_and_followed() {
    let mut h = Harness::new(TailOptions {
        max_open_files: 4,
        park_after: Duration::ZERO,
        ..quick()
    });
    h.options.logs = vec![format!("{}/*.log", h.dir.path().display())];
    let dir = h.dir.path().to_owned();
    let file = |n: usize| dir.join(format!("f{n}.log"));
    let mut expected = Vec::new();
    for n in 0..20 {
        let l = lines(&format!("f{n}"), 5);
        h.append(&file(n), &l);
        expected.extend(l);
    }
    h.start();
    h.poll(true);
    // Each poll reads what is open, and opens more once those are idle.
    for _ in 0..20 {
        assert!(
            h.tailer.as_ref().unwrap().lags().len() <= 4,
            "more files open than allowed"
        );
        h.poll(true);
    }
    assert!(!h.tailer.as_ref().unwrap().has_deferred());
    assert_exactly_once(&h, &expected);

    // A closed file grows; another is rotated with a line written late to
    // the old file, and a new one started.
    let more = lines("f3-more", 2);
    h.append(&file(3), &more);
    expected.extend(more);
    let late = lines("f5-late", 1);
    h.append(&file(5), &late);
    expected.extend(late);
    fs::rename(file(5), dir.join("f5.log.1")).unwrap();
    let fresh = lines("f5-new", 3);
    h.append(&file(5), &fresh);
    expected.extend(fresh);
    for _ in 0..10 {
        h.poll(true);
    }
    assert_exactly_once(&h, &expected);

    // A restart reads nothing again.
    h.stop();
    h.start();
    for _ in 0..10 {
        h.poll(true);
    }
    assert_exactly_once(&h, &expected);
    assert!(h.unstable_ids().is_empty());
}

/// Each line says which configured log its file belongs to (the first
/// `--log` value naming it), and gives the first lines of the very file it
/// came from, through the tailer's handle: after a rename and a new file at
/// the path, still the old file's; and reading them moves nothing.
#[test]
fn a_line_knows_its_log_and_the_head_of_its_own_file() {
    use cerberus_agent::source::Handling;
    use cerberus_agent::tail::{CheckpointStore, Tailer};
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.log");
    let other = dir.path().join("other.log");
    fs::write(&app, "app 1\napp 2\n").unwrap();
    fs::write(&other, "other 1\n").unwrap();
    let mut options = quick();
    options.from_beginning = true;
    options.logs = vec![
        app.display().to_string(),
        dir.path().join("*.log").display().to_string(),
    ];
    let mut t = Tailer::new(options, CheckpointStore::open(state.path()).unwrap());
    t.scan().unwrap();
    let mut seen = Vec::new();
    let mut poll = |t: &mut Tailer, rename: bool| {
        t.poll(1000, &mut |l| {
            let (head, _) = l.origin.first_lines(10).expect("head");
            let head: Vec<String> = head
                .iter()
                .map(|h| String::from_utf8_lossy(h).into_owned())
                .collect();
            if rename && l.origin.log == 0 && seen.is_empty() {
                // The path now names another file; this line's file is
                // the renamed one.
                fs::rename(&app, dir.path().join("app.log.1")).unwrap();
                fs::write(&app, "new 1\n").unwrap();
            }
            seen.push((
                String::from_utf8_lossy(l.line.bytes).into_owned(),
                l.origin.log,
                head,
            ));
            Handling::Done
        })
        .unwrap();
    };
    poll(&mut t, true);
    let app_head = vec!["app 1".to_owned(), "app 2".to_owned()];
    assert!(
        seen.contains(&("app 1".into(), 0, app_head.clone())),
        "{seen:?}"
    );
    assert!(seen.contains(&("app 2".into(), 0, app_head)), "{seen:?}");
    assert!(
        seen.contains(&("other 1".into(), 1, vec!["other 1".to_owned()])),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 3, "each line once: {seen:?}");
}

/// A file the agent followed whose content changed under it (copytruncate
/// truncated it, the server wrote it anew) with no checkpoint for the new
/// content before a crash, then rotated away: at the next start it is a
/// rotated sibling whose inode the checkpoints know with other content.
/// Its lines were the agent's to deliver, however long ago it was last
/// written (a system test run lost 993 lines this way).
#[test]
fn a_rotated_file_whose_inode_was_followed_with_other_content_is_read() {
    use std::os::unix::fs::MetadataExt;
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.append(&log, &lines("new-content", 5));
    let meta = fs::metadata(&log).unwrap();
    // What the crashed agent saved: this inode, with the content it had
    // before the truncation, and a look at the path after the last write.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let checkpoints = format!(
        r#"{{"version":1,"files":[{{"device":{},"inode":{},"fingerprint":"00000000000000aa","path":"{}","offset":0,"finished":false,"updated":{now}}}],"paths":{{"{}":{now}}}}}"#,
        meta.dev(),
        meta.ino(),
        log.display(),
        log.display()
    );
    fs::write(h.state.path().join("checkpoints.json"), checkpoints).unwrap();
    // Last written a minute before that look, then rotated away.
    let written = std::time::SystemTime::now() - Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(&log)
        .unwrap()
        .set_modified(written)
        .unwrap();
    fs::rename(&log, h.rotated(1)).unwrap();
    fs::write(&log, b"").unwrap();
    h.start();
    h.poll(true);
    assert_exactly_once(&h, &lines("new-content", 5));
}

/// With the sink full the agent reads nothing, but it still looks at its
/// files about once a second (`learn_identities`). A file copytruncated and
/// written anew in that time, then rotated and compressed while the agent
/// is down, must still be found at the next start: the agent must have
/// noticed that the content changed and checkpointed the new content (at
/// offset 0), so that its fingerprint finds the compressed copy.
#[test]
fn content_replaced_while_nothing_was_read_is_checkpointed_and_found_compressed() {
    let mut h = Harness::new(quick());
    let log = h.log.clone();
    h.start();
    h.append(&log, &lines("old", 3));
    let gzip = |path: &std::path::Path| {
        let out = std::process::Command::new("gzip")
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "gzip: {out:?}");
    };
    // The first look at the new content, with nothing read (a full sink).
    h.tailer.as_mut().unwrap().scan().unwrap();
    h.tailer.as_mut().unwrap().learn_identities();
    // copytruncate, and the server writes new lines.
    h.copy(&log, &h.rotated(1));
    h.truncate(&log);
    h.append(&log, &lines("new", 3));
    // The agent's once-a-second look, still reading nothing; then a crash.
    h.tailer.as_mut().unwrap().learn_identities();
    h.tailer.as_mut().unwrap().save_checkpoints(true).unwrap();
    h.kill();
    // While it is down: rotated (create) and both copies compressed.
    fs::rename(&log, h.rotated(2)).unwrap();
    fs::write(&log, b"").unwrap();
    gzip(&h.rotated(1));
    gzip(&h.rotated(2));
    h.start();
    h.poll(true);
    let counts = h.counts();
    for l in lines("old", 3).iter().chain(&lines("new", 3)) {
        assert!(
            counts.get(l).copied().unwrap_or(0) >= 1,
            "{l} was lost: {:?}",
            h.out
        );
    }
}
