//! The module picture of `src/`, checked on every run.
//!
//! Every top-level module sits in one layer and uses only modules of LOWER layers, so a
//! request flows one way (route -> policy -> session -> refresh -> header rewrite ->
//! upstream), the lower layers never learn of the upper ones, and there is no cycle. Only
//! `lib.rs` and `main.rs` (the entry points, not nodes here) wire `gateway`. A new module must
//! be given a layer here.
//!
//! An edge is a path `crate::x` (or `crate::{x, y::z}`) written anywhere in the files of a
//! module, its tests included, comments excluded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const LAYERS: &[&[&str]] = &[
    // plain data and helpers, no I/O
    &[
        "secret", "clock", "claims", "metrics", "redirect", "error", "logging", "fold", "host",
    ],
    // parsed once, read-only; keys derived from the cookie secrets
    &["config", "seal"],
    // pure decisions and rewrites: a route decision, a `HeaderMap` rewrite
    &["policy", "headers", "tls"],
    // the cookies the gateway sets (it reads them with `headers`); what `check` warns about
    &["cookie", "lint"],
    // I/O: upstream, accept loop, provider client, stores
    &["proxy", "server", "oidc", "session", "healthcheck"],
    // `authgate sessions`: a client of the admin API (over the health check's addressing)
    &["sessions_cli"],
    // flows over sessions and the provider
    &["refresh", "login"],
    // every refusal, and the one place it becomes HTTP
    &["reply"],
    // who this request is: a session, or a bearer JWT
    &["auth"],
    // the gateway's own paths
    &["endpoints"],
    // the pipeline
    &["gateway"],
    // `authgate demo`; the fuzzing facade
    &["demo", "fuzzing"],
];

/// Named by issue 15. They follow from LAYERS, and stay listed so that an edit of LAYERS
/// cannot quietly allow them. `*`: any module.
const FORBIDDEN: &[(&str, &str)] = &[
    ("policy", "session"),
    ("policy", "oidc"),
    ("headers", "session"),
    ("headers", "oidc"),
    ("proxy", "session"),
    ("proxy", "oidc"),
    ("session", "endpoints"),
    ("session", "login"),
    ("session", "redirect"),
    ("*", "gateway"),
];

#[test]
fn every_edge_points_down() {
    let graph = graph();
    let mut wrong = Vec::new();
    for (from, tos) in &graph {
        for to in tos {
            let forbidden = FORBIDDEN
                .iter()
                .any(|&(f, t)| (f == from || f == "*") && t == to);
            if layer(to) >= layer(from) || forbidden {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "edges against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_cycles() {
    let graph = graph();
    let mut done = BTreeSet::new();
    for start in graph.keys() {
        let mut path = Vec::new();
        if let Some(cycle) = find_cycle(&graph, start, &mut path, &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

/// The reader sees real edges (a parser that finds nothing would pass everything).
#[test]
fn the_graph_is_read() {
    let graph = graph();
    assert!(graph["gateway"].contains("policy"), "{graph:?}");
    assert!(graph["session"].contains("config"), "{graph:?}");
    assert!(graph.len() >= 15, "{graph:?}");
}

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` has no layer in tests/layering.rs"))
}

/// Depth-first search; on a back edge, the path that closes the cycle.
fn find_cycle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    at: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|m| m == at) {
        let mut cycle = path[i..].to_vec();
        cycle.push(at.to_owned());
        return Some(cycle);
    }
    if done.contains(at) {
        return None;
    }
    path.push(at.to_owned());
    for to in graph.get(at).into_iter().flatten() {
        if let Some(cycle) = find_cycle(graph, to, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(at.to_owned());
    None
}

/// Top-level module -> the other top-level modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let texts = files.entry(name).or_default();
        read_rs(&path, texts);
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (module, texts) in &files {
        let mut uses = BTreeSet::new();
        for text in texts {
            for used in crate_paths(&without_comments(text)) {
                if modules.contains(&used) && used != *module {
                    uses.insert(used);
                }
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

/// The text of `path` (a `.rs` file) or of every `.rs` file under it (a directory).
fn read_rs(path: &Path, texts: &mut Vec<String>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            read_rs(&entry.unwrap().path(), texts);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        texts.push(std::fs::read_to_string(path).unwrap());
    }
}

/// `//` line comments (doc comments included) and `/* */` blocks removed. A `//` inside a
/// string (a URL) cuts the rest of its line too: no module path is written after one.
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('/') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("//") {
            rest = tail.find('\n').map_or("", |end| &tail[end..]);
        } else if tail.starts_with("/*") {
            rest = tail.find("*/").map_or("", |end| &tail[end + 2..]);
        } else {
            out.push('/');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The first segment of every `crate::x` path, and of every path in a `crate::{..}` group.
fn crate_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `authgate_crate::`, say
        }
        let after = &text[i + "crate::".len()..];
        match after.strip_prefix('{') {
            // Top-level names of the group: those at brace depth 0, after `{` or `,`.
            Some(group) => {
                let (mut depth, mut expect_name) = (0, true);
                for (j, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => expect_name = true,
                        c if expect_name && depth == 0 && !c.is_whitespace() => {
                            found.push(ident(&group[j..]));
                            expect_name = false;
                        }
                        _ => {}
                    }
                }
            }
            None => found.push(ident(after)),
        }
    }
    found
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}
