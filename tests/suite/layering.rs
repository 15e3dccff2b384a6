//! The crate's shape, read from its `use` statements: the top-level modules
//! import one another without a cycle, settings know no component and no
//! command line, and the pipeline reads no file and matches no glob of its
//! own (what it knows of a line's origin comes with the line).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Per top-level module of `src/`, the top-level modules its code (not its
/// comments) names as `crate::…`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = common::repo().join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read src") {
                files.push(entry.expect("entry").path());
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(&src).expect("under src");
        let top = top_module(rel);
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        let names = graph.entry(top.clone()).or_default();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    names.insert(name);
                }
            }
        }
    }
    graph
}

fn top_module(rel: &Path) -> String {
    let first = rel.components().next().expect("a component");
    let name = first.as_os_str().to_string_lossy();
    name.strip_suffix(".rs").unwrap_or(&name).to_owned()
}

#[test]
fn the_modules_import_one_another_without_a_cycle() {
    let graph = imports();
    assert!(graph.len() > 10, "the modules were found: {graph:?}");
    // Depth-first search for a path back to where it started.
    fn reaches(
        graph: &BTreeMap<String, BTreeSet<String>>,
        from: &str,
        target: &str,
        seen: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> bool {
        for next in graph.get(from).into_iter().flatten() {
            path.push(next.clone());
            if next == target
                || (seen.insert(next.clone()) && reaches(graph, next, target, seen, path))
            {
                return true;
            }
            path.pop();
        }
        false
    }
    for module in graph.keys() {
        let mut path = vec![module.clone()];
        let cycle = reaches(&graph, module, module, &mut BTreeSet::new(), &mut path);
        assert!(!cycle, "an import cycle: {}", path.join(" → "));
    }
}

#[test]
fn settings_know_no_component_and_no_command_line() {
    let graph = imports();
    let config = &graph["config"];
    let leaves: BTreeSet<String> = ["secret".to_owned()].into();
    assert!(
        config.is_subset(&leaves),
        "config imports {config:?}: it must know no component (the plan maps settings to them)"
    );
    let text = std::fs::read_to_string(common::repo().join("src/config.rs")).unwrap();
    assert!(!text.contains("clap"), "config.rs names clap");
}

#[test]
fn the_pipeline_opens_no_file_and_matches_no_glob() {
    let dir = common::repo().join("src/pipeline");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for forbidden in ["File::open", "open_regular", "glob::", "fs::read"] {
            assert!(
                !text.contains(forbidden),
                "{} uses {forbidden}: a line's origin comes with the line",
                path.display()
            );
        }
    }
}

#[test]
fn the_agent_loop_knows_sources_only_through_their_trait() {
    // The tailer is named where sources are opened, and nowhere else in
    // the loop: another kind of input plugs in beside it.
    let text = std::fs::read_to_string(common::repo().join("src/agent/mod.rs")).unwrap();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let opener = code
        .find("fn open_sources")
        .expect("the agent opens its sources in open_sources");
    let opener_end = opener + code[opener..].find("\n}").expect("its end");
    for (i, _) in code.match_indices("Tailer") {
        let in_use_line = code[..i]
            .rsplit('\n')
            .next()
            .is_some_and(|l| l.starts_with("use "));
        assert!(
            in_use_line || (opener..opener_end).contains(&i),
            "the agent names Tailer outside open_sources: {}",
            &code[i.saturating_sub(80)..(i + 40).min(code.len())]
        );
    }
}
