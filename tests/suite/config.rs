//! Settings layering: defaults < config file < CERBERUS_* environment <
//! flags, and errors that name the key.

use crate::common;

use std::collections::HashMap;
use std::process::Command;

use cerberus_agent::cli::{CommonArgs, RunArgs};
use cerberus_agent::config::{Layers, Settings};

fn settings(file: Option<&str>, env: &[(&str, &str)], run: RunArgs) -> Result<Settings, String> {
    let dir = tempfile::tempdir().unwrap();
    let mut common = run.common.clone();
    if let Some(text) = file {
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        common.patterns.config.config = Some(path);
    }
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Layers::new(
        common.patterns.config.config.as_deref(),
        cerberus_agent::cli::given_flags(&common, Some(&run)),
        env,
    )
    .settings()
    .map_err(|e| e.to_string())
}

#[test]
fn file_then_env_then_flags() {
    let file = "ws_url = \"wss://file.example/ws\"\nclient_id = \"from-file\"\nformat = \"nginx_json\"\nquery_params = true\n";
    let s = settings(Some(file), &[], RunArgs::default()).unwrap();
    assert_eq!(s.ws_url.as_deref(), Some("wss://file.example/ws"));
    assert_eq!(s.client_id.as_deref(), Some("from-file"));
    assert_eq!(s.format, "nginx_json");
    assert!(s.query_params);

    let env = [
        ("CERBERUS_WS_URL", "wss://env.example/ws"),
        ("CERBERUS_CLIENT_ID", "from-env"),
    ];
    let s = settings(Some(file), &env, RunArgs::default()).unwrap();
    assert_eq!(s.ws_url.as_deref(), Some("wss://env.example/ws"));
    assert_eq!(s.client_id.as_deref(), Some("from-env"));
    assert_eq!(
        s.format, "nginx_json",
        "file value kept where env is silent"
    );

    let flags = RunArgs {
        ws_url: Some("ws://127.0.0.1:9/ws".into()),
        ..RunArgs::default()
    };
    let s = settings(Some(file), &env, flags).unwrap();
    assert_eq!(s.ws_url.as_deref(), Some("ws://127.0.0.1:9/ws"));
    assert_eq!(s.client_id.as_deref(), Some("from-env"));
}

#[test]
fn defaults_when_nothing_is_given() {
    let s = settings(None, &[], RunArgs::default()).unwrap();
    assert_eq!(s.format, "auto");
    assert_eq!(
        s.state_dir,
        std::path::PathBuf::from("/var/lib/cerberus-agent")
    );
    assert_eq!(s.max_line_bytes, 64 * 1024);
    assert!(!s.debug && !s.query_params && s.ws_url.is_none());
}

#[test]
fn debug_reads_like_the_middleware() {
    for yes in ["true", "1", "yes", "TRUE"] {
        let s = settings(None, &[("CERBERUS_DEBUG", yes)], RunArgs::default()).unwrap();
        assert!(s.debug, "CERBERUS_DEBUG={yes}");
    }
    for no in ["false", "0", "no"] {
        let s = settings(None, &[("CERBERUS_DEBUG", no)], RunArgs::default()).unwrap();
        assert!(!s.debug, "CERBERUS_DEBUG={no}");
    }
}

#[test]
fn lists_from_the_environment_are_comma_separated() {
    let s = settings(
        None,
        &[("CERBERUS_LOG", "/a.log,/b/*.log")],
        RunArgs::default(),
    )
    .unwrap();
    assert_eq!(s.log, vec!["/a.log".to_string(), "/b/*.log".to_string()]);
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    let e = settings(Some("ws_ulr = \"wss://x\"\n"), &[], RunArgs::default()).unwrap_err();
    assert!(e.contains("ws_ulr"), "{e}");
    let e = settings(Some("max_line_bytes = \"lots\"\n"), &[], RunArgs::default()).unwrap_err();
    assert!(e.contains("max_line_bytes"), "{e}");
    let e = settings(
        None,
        &[("CERBERUS_WS_URL", "http://not-ws")],
        RunArgs::default(),
    )
    .unwrap_err();
    assert!(e.contains("ws_url") && e.contains("wss://"), "{e}");
}

/// Other Cerberus tools share the prefix: a variable that is no setting is
/// ignored (main warns naming it), never a reason to stop.
#[test]
fn unknown_environment_variables_are_ignored_and_listed() {
    let run = RunArgs::default();
    let env: HashMap<String, String> =
        [("CERBERUS_NO_SUCH_THING", "1"), ("CERBERUS_CLIENT_ID", "x")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let layers = Layers::new(
        run.common.patterns.config.config.as_deref(),
        cerberus_agent::cli::given_flags(&run.common, Some(&run)),
        env,
    );
    let s = layers
        .settings()
        .expect("an unknown variable does not stop the agent");
    assert_eq!(s.client_id.as_deref(), Some("x"));
    assert_eq!(layers.unknown_env(), vec!["CERBERUS_NO_SUCH_THING"]);
}

#[test]
fn values_of_a_fixed_set_name_the_allowed_ones_and_the_variable() {
    let e = settings(None, &[("CERBERUS_WIRE", "foo")], RunArgs::default()).unwrap_err();
    assert!(
        e.contains("\"batch\", \"single\"") && e.contains("CERBERUS_WIRE"),
        "{e}"
    );
    let e = settings(Some("default_scheme = \"ftp\"\n"), &[], RunArgs::default()).unwrap_err();
    assert!(e.contains("\"http\", \"https\""), "{e}");
}

#[test]
fn secrets_never_print() {
    let s = settings(
        None,
        &[
            ("CERBERUS_TOKEN", "tok-SECRET-1"),
            ("CERBERUS_SECRET_KEY", "key-SECRET-2"),
        ],
        RunArgs::default(),
    )
    .unwrap();
    let shown = format!("{s:?} {:?}", cerberus_agent::plan::event_options(&s));
    assert!(!shown.contains("SECRET"), "{shown}");
    assert_eq!(s.token.as_ref().unwrap().expose(), "tok-SECRET-1");
}

#[test]
fn the_binary_exits_2_on_configuration_errors_without_leaking_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, "token = \"tok-SECRET-3\"\nbogus_key = 1\n").unwrap();
    let out = Command::new(common::agent_bin())
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--log",
            "/dev/null",
            "--once",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bogus_key"), "{stderr}");
    assert!(!stderr.contains("SECRET"), "{stderr}");

    let out = Command::new(common::agent_bin())
        .args([
            "--log",
            "/dev/null",
            "--format",
            "no_such_format",
            "--once",
            "--token",
            "tok-SECRET-4",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("nginx_combined"),
        "lists known patterns: {stderr}"
    );
    assert!(!stderr.contains("SECRET"), "{stderr}");
}

#[test]
fn common_args_default_is_empty() {
    // Guards the test helper above: no flags means no flag layer.
    let layers = Layers::new(
        None,
        cerberus_agent::cli::given_flags(&CommonArgs::default(), None),
        HashMap::new(),
    );
    assert!(layers.flags.is_empty());
}

/// The packaged /etc/cerberus/agent.toml documents every setting, and with
/// every commented example switched on it still loads (the examples are
/// valid values, not prose).
#[test]
fn the_packaged_config_documents_every_setting_and_its_examples_load() {
    let text = std::fs::read_to_string(common::repo().join("packaging/agent.toml")).unwrap();
    let as_is = settings(Some(&text), &[], RunArgs::default()).expect("the packaged config loads");
    // Nothing to follow named: nginx's own config decides (read at start).
    assert!(as_is.log.is_empty() && as_is.nginx_conf.is_none());
    assert_eq!(
        as_is.ws_url, None,
        "the package must not send anywhere before it is set"
    );
    for key in cerberus_agent::config::settings_keys() {
        let documented = text.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(&format!("{key} =")) || l.starts_with(&format!("[[{key}]]"))
        });
        assert!(documented, "packaging/agent.toml does not document `{key}`");
    }
    // Uncomment every `# key = value` line (and the [[logs]] example).
    let examples: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with("[[")
                    || rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
            {
                rest.to_owned()
            }
            _ => l.to_owned(),
        })
        .map(|l| l + "\n")
        .collect();
    // Keys uncommented after a table ([[logs]], [[journal]]) would land in
    // it: move the tables to the end.
    let (top, logs): (Vec<&str>, Vec<&str>) = {
        let mut logs = Vec::new();
        let mut top = Vec::new();
        let mut in_table = false;
        let table_keys = ["path", "format", "exclude", "unit", "identifier"];
        for l in examples.lines() {
            if l.starts_with("[[") {
                in_table = true;
            } else if in_table && !table_keys.iter().any(|k| l.starts_with(k)) {
                in_table = false;
            }
            if in_table { logs.push(l) } else { top.push(l) }
        }
        (top, logs)
    };
    let all = format!("{}\n{}\n", top.join("\n"), logs.join("\n"));
    let s = settings(Some(&all), &[], RunArgs::default())
        .unwrap_or_else(|e| panic!("the commented examples do not load: {e}\n{all}"));
    assert_eq!(s.logs.len(), 1);
    assert_eq!((s.journal.len(), s.journal_unit.len()), (1, 1));
    assert_eq!(
        s.ws_url.as_deref(),
        Some("wss://cerberus.example.com/ws/events/")
    );
}
