//! packaging/kubernetes/: the manifests validate against Kubernetes' own
//! schemas (kubernetes-validate, from PyPI, strict), the kustomization
//! names every one of them, and the agent runs with the ConfigMap's config
//! and the DaemonSet's environment on a node's pod logs.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::common;
use common::programs::{printed_events, run_agent};

fn manifests() -> PathBuf {
    common::repo().join("packaging/kubernetes")
}

/// The files the kustomization lists as resources.
fn kustomized() -> Vec<String> {
    let text = fs::read_to_string(manifests().join("kustomization.yaml")).expect("kustomization");
    let mut out = Vec::new();
    let mut in_resources = false;
    for line in text.lines() {
        if line.starts_with("resources:") {
            in_resources = true;
        } else if in_resources && let Some(item) = line.trim().strip_prefix("- ") {
            out.push(item.trim().to_owned());
        } else if !line.starts_with(' ') {
            in_resources = false;
        }
    }
    out
}

#[test]
fn the_manifests_validate_against_the_kubernetes_schemas() {
    let listed = kustomized();
    let on_disk: BTreeSet<String> = fs::read_dir(manifests())
        .expect("packaging/kubernetes")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed.iter().cloned().collect::<BTreeSet<_>>(),
        on_disk,
        "the kustomization lists every manifest"
    );
    let validate = common::repo().join("target/test-venv/bin/kubernetes-validate");
    assert!(
        validate.exists(),
        "{} is missing: tests/setup.sh installs it",
        validate.display()
    );
    let out = Command::new(&validate)
        .args(["--strict", "--kubernetes-version", "1.33.0"])
        .args(listed.iter().map(|f| manifests().join(f)))
        .output()
        .expect("run kubernetes-validate");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    for f in &listed {
        assert!(
            said.contains(&format!("{} passed", manifests().join(f).display())),
            "{f} was not validated:\n{said}"
        );
    }
    let daemonset = fs::read_to_string(manifests().join("daemonset.yaml")).unwrap();
    for needed in [
        "path: /health",
        "path: /ready",
        "readOnlyRootFilesystem: true",
        "drop: [\"ALL\"]",
        "fieldPath: spec.nodeName",
        "operator: Exists",
        "name: metrics",
    ] {
        assert!(daemonset.contains(needed), "the DaemonSet lacks {needed:?}");
    }
}

/// The ConfigMap's agent.toml, as the pod sees it.
fn config_map_toml() -> String {
    let text = fs::read_to_string(manifests().join("configmap.yaml")).expect("configmap");
    let (_, body) = text
        .split_once("agent.toml: |\n")
        .expect("an agent.toml key");
    body.lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_config_map_runs_the_agent_on_a_nodes_pod_logs() {
    let work = tempfile::tempdir().unwrap();
    let pods = work.path().join("pods");
    let uid = "0b6f9a52-3c1e-4d7a-9f0e-2a1b3c4d5e6f";
    let shop = pods.join(format!("shop_web-1_{uid}/nginx"));
    let system = pods.join(format!("kube-system_coredns-1_{uid}/coredns"));
    for dir in [&shop, &system] {
        fs::create_dir_all(dir).unwrap();
        fs::write(
            dir.join("0.log"),
            "2026-12-06T23:35:41.5Z stdout F 10.0.0.1 - - [06/Dec/2026:23:35:41 +0000] \"GET /a HTTP/1.1\" 200 5 \"-\" \"curl/8\"\n",
        )
        .unwrap();
    }
    // The ConfigMap's paths, moved into the test's folder.
    let toml = config_map_toml().replace("/var/log/pods", &pods.display().to_string());
    let config = work.path().join("agent.toml");
    fs::write(&config, toml).unwrap();
    let state = work.path().join("state");
    let out = run_agent(
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--once",
            "--stdout",
        ],
        &[
            ("CERBERUS_NODE_NAME", "node-3"),
            ("CERBERUS_TOKEN", "t"),
            ("CERBERUS_SECRET_KEY", "k"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events = printed_events(&out.stdout);
    assert_eq!(
        events.len(),
        1,
        "kube-system is excluded: {events:?}\n{stderr}"
    );
    let k = &events[0]["kubernetes"];
    assert_eq!(k["namespace"], "shop");
    assert_eq!(k["pod"], "web-1");
    assert_eq!(k["pod_uid"], uid);
    assert_eq!(k["container"], "nginx");
    assert_eq!(k["node"], "node-3");
    assert_eq!(events[0]["endpoint"], "/a");
}
