//! Every value a server can write comes back exactly: property tests, one
//! per escape mode.
//!
//! For random values (any bytes a server accepts in a header: tab, space,
//! printable ASCII and every byte from 0x80, with `"`, `\` and spaces
//! drawn often), each test writes the log line the way that server writes
//! it (an encoder below, following the server's rules, which the samples
//! recorded from the real servers in `tests/samples/` confirm), splits it
//! with the bundled pattern, and compares the values with what was sent.
//!
//! The cases run by default are few hundred per test; run longer with
//! `PROPTEST_CASES=100000 cargo test --release --test escaping`.

use cerberus_agent::parse::{PatternSet, Role};
use proptest::prelude::*;

/// A byte a client can put in a header value (no CR, LF or other control
/// byte but tab), with the bytes that break parsers drawn often.
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => Just(b'"'),
        3 => Just(b'\\'),
        2 => Just(b' '),
        1 => Just(b'\t'),
        1 => Just(b'['),
        1 => Just(b']'),
        1 => Just(b'x'),
        4 => 0x21u8..=0x7e,
        3 => 0x80u8..=0xff,
    ]
}

/// A header value as it reaches the log: servers trim the ends, and write
/// `-` for an empty one (which the agent reads as absent).
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(header_byte(), 1..40).prop_filter("trimmed, not `-`", |v| {
        !matches!(v.first(), Some(b' ' | b'\t'))
            && !matches!(v.last(), Some(b' ' | b'\t'))
            && v != b"-"
    })
}

/// A request target: no space or control byte (servers refuse those).
fn target() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => Just(b'"'),
            3 => Just(b'\\'),
            1 => Just(b'%'),
            6 => 0x21u8..=0x7e,
            2 => 0x80u8..=0xff,
        ],
        0..30,
    )
    .prop_map(|mut rest| {
        rest.insert(0, b'/');
        rest
    })
}

/// nginx `escape=default`: `"`, `\`, control bytes and bytes >= 0x7f as
/// `\xHH` (upper-case hex), as in `tests/samples/nginx_combined.log`.
fn nginx_default(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in value {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.extend_from_slice(format!("\\x{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// nginx `escape=json`: `"` and `\` backslashed, control bytes as `\n`,
/// `\t`… or `\u00XX`, every other byte (>= 0x80 too) as it came.
fn nginx_json(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in value {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..0x20 => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out
}

/// Apache's `ap_escape_logitem`: `"` and `\` backslashed, `\t` `\n` `\r`
/// `\b` `\v`, and every other unprintable byte as `\xhh` (lower case), as
/// in `tests/samples/apache_combined.log`.
fn apache(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in value {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0b => out.extend_from_slice(b"\\v"),
            0x20..0x7f => out.push(b),
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
    out
}

/// gunicorn: the WSGI text is the bytes read as latin-1; gunicorn writes
/// `"` as `\"` and the text as UTF-8, as in
/// `tests/samples/gunicorn_cerberus.log`.
fn gunicorn(value: &[u8]) -> Vec<u8> {
    let text: String = value.iter().map(|&b| char::from(b)).collect();
    text.replace('"', "\\\"").into_bytes()
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const TIME: &[u8] = b"25/Nov/2026:10:04:05 +0000";

/// Splits `line` with the bundled pattern `name` and checks each role's
/// value against what was sent.
fn check(name: &str, line: &[u8], want: &[(Role, &[u8])]) -> Result<(), TestCaseError> {
    let set = PatternSet::bundled().expect("bundled patterns compile");
    let pattern = set.get(name).expect("bundled");
    let fields = pattern
        .split(line)
        .map_err(|e| TestCaseError::fail(format!("{name}: {e}\n line: {}", line.escape_ascii())))?;
    for (role, value) in want {
        prop_assert_eq!(
            fields.get(*role).map(|v| v.escape_ascii().to_string()),
            Some(value.escape_ascii().to_string()),
            "{}: {:?} of line {}",
            name,
            role,
            line.escape_ascii()
        );
    }
    Ok(())
}

fn request(target: &[u8]) -> Vec<u8> {
    join(&[b"GET ", target, b" HTTP/1.1"])
}

proptest! {
    #[test]
    fn nginx_combined_values_come_back(
        user in header_value(), target in target(), referer in header_value(), ua in header_value()
    ) {
        let e = nginx_default;
        let line = join(&[
            b"127.0.0.1 - ", &e(&user), b" [", TIME, b"] \"", &e(&request(&target)),
            b"\" 200 5 \"", &e(&referer), b"\" \"", &e(&ua), b"\"",
        ]);
        check("nginx_combined", &line, &[(Role::UserAgent, &ua), (Role::Request, &request(&target))])?;
    }

    #[test]
    fn nginx_json_values_come_back(
        target in target(), referer in header_value(), ua in header_value(), metrics in header_value()
    ) {
        let e = nginx_json;
        let line = join(&[
            b"{\"remote_addr\":\"127.0.0.1\",\"time_iso8601\":\"2026-11-25T10:04:05+00:00\",\"request_method\":\"GET\",\"request_uri\":\"",
            &e(&target), b"\",\"scheme\":\"http\",\"status\":\"200\",\"body_bytes_sent\":\"5\",\"request_time\":\"0.001\",\"http_referer\":\"",
            &e(&referer), b"\",\"http_user_agent\":\"", &e(&ua),
            b"\",\"upstream_http_x_cerberus_metrics\":\"", &e(&metrics), b"\"}",
        ]);
        check("nginx_json", &line, &[
            (Role::UserAgent, &ua), (Role::Path, &target), (Role::Metrics, &metrics),
        ])?;
    }

    #[test]
    fn apache_combined_values_come_back(
        user in header_value(), target in target(), referer in header_value(), ua in header_value()
    ) {
        let e = apache;
        let line = join(&[
            b"127.0.0.1 - ", &e(&user), b" [", TIME, b"] \"", &e(&request(&target)),
            b"\" 200 5 \"", &e(&referer), b"\" \"", &e(&ua), b"\"",
        ]);
        check("apache_combined", &line, &[(Role::UserAgent, &ua), (Role::Request, &request(&target))])?;
    }

    #[test]
    fn gunicorn_values_come_back(
        user in header_value(), target in target(), referer in header_value(), ua in header_value()
    ) {
        let e = gunicorn;
        let line = join(&[
            b"127.0.0.1 - ", &e(&user), b" [", TIME, b"] \"", &e(&request(&target)),
            b"\" 200 5 \"", &e(&referer), b"\" \"", &e(&ua), b"\"",
        ]);
        check("gunicorn", &line, &[(Role::UserAgent, &ua), (Role::Request, &request(&target))])?;
    }

    #[test]
    fn gunicorn_cerberus_values_come_back(
        user in header_value(), target in target(), referer in header_value(),
        ua in header_value(), metrics in header_value()
    ) {
        let e = gunicorn;
        let line = join(&[
            b"127.0.0.1 - ", &e(&user), b" [", TIME, b"] \"", &e(&request(&target)),
            b"\" 200 5 \"", &e(&referer), b"\" \"", &e(&ua), b"\" 0.000310 \"", &e(&metrics), b"\"",
        ]);
        check("gunicorn_cerberus", &line, &[
            (Role::UserAgent, &ua), (Role::Request, &request(&target)), (Role::Metrics, &metrics),
        ])?;
    }
}

/// The encoders above write what the real servers wrote for the same
/// values (recorded by `tests/samples/record.sh`): the property tests
/// exercise the servers' real escaping, not an idea of it.
#[test]
fn encoders_match_the_recorded_servers() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples");
    let read = |name: &str| std::fs::read(dir.join(name)).expect("recorded sample");
    // The user agent sent with the /adv/backslash-quote request, and the
    // UTF-8 one of /adv/utf8.
    let ua = br#"back\"slash"#;
    let utf8 = "Zürich 東京 bot".as_bytes();
    let tab = b"tab\there\tand";
    for (file, encode) in [
        ("nginx_combined.log", nginx_default as fn(&[u8]) -> Vec<u8>),
        ("nginx_json.log", nginx_json),
        ("apache_combined.log", apache),
        ("gunicorn.log", gunicorn),
    ] {
        let log = read(file);
        for value in [&ua[..], utf8, tab] {
            let written = join(&[b"\"", &encode(value), b"\""]);
            assert!(
                memchr::memmem::find(&log, &written).is_some(),
                "{file} does not hold {} as the encoder writes it",
                written.escape_ascii()
            );
        }
    }
}

/// A client field no server writes as one address: words of address
/// characters joined by spaces or commas (a host before the address, a
/// forwarded-for list).
fn spaced_client() -> impl Strategy<Value = String> {
    (
        "[a-z0-9.:]{1,15}",
        prop::sample::select(vec![" ", ", ", ",", "  "]),
        "[a-z0-9.:]{1,15}",
    )
        .prop_map(|(a, sep, b)| format!("{a}{sep}{b}"))
}

/// The first line from 127.0.0.1 in each bundled pattern's recorded sample.
fn recorded_request_lines() -> &'static [String] {
    static LINES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    LINES.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples");
        let set = PatternSet::bundled().expect("bundled patterns");
        let pattern = |name: &str| set.get(name).expect("bundled");
        cerberus_agent::parse::bundled_names()
            .map(|name| {
                let log = std::fs::read(dir.join(format!("{name}.log")))
                    .unwrap_or_else(|e| panic!("{name}.log: {e}"));
                String::from_utf8_lossy(&log)
                    .lines()
                    .find(|l| l.contains("127.0.0.1") && pattern(name).is_access_line(l.as_bytes()))
                    .unwrap_or_else(|| panic!("{name}.log has a request from 127.0.0.1"))
                    .to_owned()
            })
            .collect()
    })
}

proptest! {
    /// No bundled pattern turns a line into an event whose client is a
    /// field with a space or a comma, whatever format the rest of the line
    /// has: such a line fits another format, or none.
    #[test]
    fn no_pattern_takes_a_client_with_a_space_or_a_comma(
        client in spaced_client(),
        shape in 0usize..5,
    ) {
        let rest = [
            r#"- - [25/Nov/2026:10:04:05 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua""#,
            r#"- - [25/Nov/2026:10:04:05 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua" "-""#,
            r#"- - [25/Nov/2026:10:04:05 +0000] "GET /a HTTP/1.1" 200 5"#,
            r#"- - [25/Nov/2026:10:04:05 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua" 12 "{}""#,
            r#"- alice [25/Nov/2026:10:04:05 +0000] "POST /b HTTP/2.0" 404 0 "https://r/" "ua""#,
        ][shape];
        let line = format!("{client} {rest}");
        let json = format!(
            r#"{{"remote_addr":"{client}","time_iso8601":"2026-11-25T10:04:05+00:00","request_method":"GET","request_uri":"/a","status":"200"}}"#
        );
        // And a line of each recorded server, its client replaced.
        let recorded: Vec<Vec<u8>> = recorded_request_lines()
            .iter()
            .map(|l| l.replace("127.0.0.1", &client).into_bytes())
            .collect();
        let shaped = [line.as_bytes(), json.as_bytes()];
        for line in shaped.into_iter().chain(recorded.iter().map(Vec::as_slice)) {
            for pattern in PatternSet::bundled().unwrap().iter() {
                let Ok(fields) = pattern.split(line) else { continue };
                let mut builder = cerberus_agent::event::EventBuilder::new(
                    pattern.clone(),
                    &cerberus_agent::event::EventOptions::default(),
                );
                let mut out = Vec::new();
                let position = cerberus_agent::event::LinePosition { stream: 0, offset: 0, time: None };
                if builder.build(&fields, position, &mut out).is_ok() {
                    let taken = fields.text(Role::ClientIp).unwrap_or_default().into_owned();
                    prop_assert!(
                        !taken.contains([' ', ',']),
                        "{} took client {:?} from {}",
                        pattern.name,
                        taken,
                        String::from_utf8_lossy(line)
                    );
                }
            }
        }
    }
}
