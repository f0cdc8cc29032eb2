//! The shape of the source tree, kept so by tests rather than by a reviewer's memory:
//!
//! - no source file over 800 lines, no test file over 1,000 lines;
//! - no import circle between the files of the hub or of the edge agent (a file that
//!   imports a file that imports it back, directly or around a longer loop; a module's
//!   own `mod.rs` and its children are one unit and do not count);
//! - the hub's handlers (`hub/src/api`) name no SQL: they read and write the log
//!   through `EventStore`'s methods;
//! - the domain and the wire types (`common/src/domain`, `common/src/wire`) import
//!   nothing that does I/O: no runtime, no HTTP, no database, and none of `common`'s
//!   `server` or `sqlite` modules.
//!
//! The files are read as text; the checks need nothing but the tree.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Longest allowed source file.
const MAX_SOURCE_LINES: usize = 800;
/// Longest allowed test file.
const MAX_TEST_LINES: usize = 1_000;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds the tests crate")
        .to_owned()
}

/// Every `.rs` file below `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next).unwrap_or_else(|e| panic!("read {}: {e}", next.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// A file of tests, by its path inside its crate: under the crate's `tests/` or
/// `benches/`, or a `tests.rs` / `tests/` module inside `src`. (The e2e crate's own `src`,
/// its harness, is source like any other.)
fn is_test_file(in_crate: &Path) -> bool {
    let mut parts = in_crate
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    match parts.next().as_deref() {
        Some("tests" | "benches") => true,
        Some("src") => parts.any(|part| part == "tests" || part == "tests.rs"),
        _ => false,
    }
}

#[test]
fn no_source_file_is_over_800_lines_and_no_test_file_over_1000() {
    // Given every Rust file of the workspace's crates
    let root = workspace();
    let mut too_long = Vec::new();
    for krate in ["common", "hub", "edge-agent", "tests"] {
        for path in rust_files(&root.join(krate)) {
            let relative = path.strip_prefix(&root).expect("below the root").to_owned();
            let in_crate = path.strip_prefix(root.join(krate)).expect("below the crate");
            // When its lines are counted
            let lines = fs::read_to_string(&path).expect("readable").lines().count();
            let limit = if is_test_file(in_crate) {
                MAX_TEST_LINES
            } else {
                MAX_SOURCE_LINES
            };
            if lines > limit {
                too_long.push(format!("{} ({lines} lines, limit {limit})", relative.display()));
            }
        }
    }
    // Then none is over its limit
    assert!(
        too_long.is_empty(),
        "files to split by concern:\n  {}",
        too_long.join("\n  ")
    );
}

/// The module path of a file of a crate's `src`: `store/writer/hub.rs` → `store::writer::hub`,
/// `store/mod.rs` → `store`, `lib.rs` → `` (the crate root).
fn module_of(relative: &Path) -> String {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts.join("::")
}

/// The paths a `use` tree or a path expression starting at `text` names, with braces
/// expanded: `a::{b::C, d}` → `a::b::C`, `a::d`.
fn expand(text: &str) -> Vec<String> {
    let head: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let rest = &text[head.len()..];
    if !rest.starts_with('{') {
        return vec![head.trim_end_matches(':').to_owned()];
    }
    // Split the braces' content at its top-level commas.
    let (mut depth, mut items, mut current) = (0usize, Vec::new(), String::new());
    for c in rest.chars() {
        match c {
            '{' if depth == 0 => depth = 1,
            '{' => {
                depth += 1;
                current.push(c)
            }
            '}' if depth == 1 => {
                items.push(std::mem::take(&mut current));
                break;
            }
            '}' => {
                depth -= 1;
                current.push(c)
            }
            ',' if depth == 1 => items.push(std::mem::take(&mut current)),
            c if c.is_whitespace() => {}
            c => current.push(c),
        }
    }
    items
        .iter()
        .filter(|item| !item.is_empty())
        .flat_map(|item| expand(item))
        .map(|tail| format!("{head}{tail}"))
        .collect()
}

/// The modules a file names through `crate::` and `super::` paths, as module paths
/// (`own` is the file's module path).
fn named_modules(text: &str, own: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut named = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        named.extend(expand(&code[at + "crate::".len()..]));
    }
    for (at, _) in code.match_indices("super::") {
        if code[..at].ends_with("::") {
            continue; // the second `super` of `super::super::`
        }
        // `super::` from `a/b.rs` or `a/b/mod.rs` (module a::b) names a.
        let mut parent: Vec<&str> = own.split("::").filter(|s| !s.is_empty()).collect();
        parent.pop();
        let mut tail = &code[at + "super::".len()..];
        while let Some(rest) = tail.strip_prefix("super::") {
            parent.pop();
            tail = rest;
        }
        for path in expand(tail) {
            named.insert(
                parent
                    .iter()
                    .copied()
                    .chain(path.split("::"))
                    .collect::<Vec<_>>()
                    .join("::"),
            );
        }
    }
    named
}

/// Files of one crate's `src` and the files each one imports (parent and child modules of
/// each other excluded).
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files: BTreeMap<String, PathBuf> = rust_files(src)
        .into_iter()
        .filter(|p| !is_test_file(&Path::new("src").join(p.strip_prefix(src).expect("below src"))))
        .map(|p| (module_of(p.strip_prefix(src).expect("below src")), p))
        .collect();
    let mut graph = BTreeMap::new();
    for (module, path) in &files {
        let text = fs::read_to_string(path).expect("readable");
        let mut targets = BTreeSet::new();
        for named in named_modules(&text, module) {
            // The longest prefix of the named path that is a file of this crate.
            let mut parts: Vec<&str> = named.split("::").collect();
            while !parts.is_empty() && !files.contains_key(&parts.join("::")) {
                parts.pop();
            }
            let target = parts.join("::");
            let related = |a: &str, b: &str| a == b || b.starts_with(&format!("{a}::")) || a.is_empty();
            if !related(&target, module) && !related(module, &target) {
                targets.insert(target);
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

/// The circles of `graph` (strongly connected components of more than one file). An
/// import of a module reaches the files below it too (`use crate::store::EventStore`
/// depends on what `store/mod.rs` is built from), so a circle through a child module
/// is found even when its `mod.rs` imports nothing back.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let below = |target: &str| -> Vec<String> {
        graph
            .keys()
            .filter(|k| *k == target || k.starts_with(&format!("{target}::")))
            .cloned()
            .collect()
    };
    // Reachability by search from each node: the graphs are a few dozen files.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(node) = stack.pop() {
            for target in graph.get(&node).into_iter().flatten() {
                for next in below(target) {
                    if seen.insert(next.clone()) {
                        stack.push(next);
                    }
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|k| (k, reach(k))).collect();
    let mut found: Vec<Vec<String>> = Vec::new();
    for (node, from_node) in &reachable {
        if !from_node.contains(*node) || found.iter().any(|c| c.contains(node)) {
            continue;
        }
        let circle: Vec<String> = from_node
            .iter()
            .filter(|other| reachable.get(other).is_some_and(|r| r.contains(*node)))
            .cloned()
            .collect();
        found.push(circle);
    }
    found
}

#[test]
fn no_file_of_the_hub_or_the_agent_imports_a_file_that_imports_it_back() {
    for krate in ["hub", "edge-agent"] {
        // Given the import graph of the crate's files
        let graph = import_graph(&workspace().join(krate).join("src"));
        assert!(graph.len() > 10, "{krate}: the graph was read ({} files)", graph.len());
        // Then it has no circle
        assert!(
            circles(&graph).is_empty(),
            "{krate} has import circles: {:?}",
            circles(&graph)
        );
    }
}

#[test]
fn the_circle_finder_finds_a_circle() {
    // Given a graph a -> b -> c -> a, and d -> a
    let graph: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .map(|(from, to)| (from.to_owned(), BTreeSet::from([to.to_owned()])))
        .collect();
    // Then the circle is a, b, c
    assert_eq!(
        circles(&graph),
        vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]
    );
}

#[test]
fn a_circle_through_a_child_module_is_found() {
    // Given bus -> store (its mod.rs imports nothing back) and store::writer -> bus
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("bus", vec!["store"]),
        ("store", vec![]),
        ("store::writer", vec!["bus"]),
    ]
    .into_iter()
    .map(|(from, to)| (from.to_owned(), to.into_iter().map(str::to_owned).collect()))
    .collect();
    // Then bus and the writer are a circle
    assert_eq!(
        circles(&graph),
        vec![vec!["bus".to_owned(), "store::writer".to_owned()]]
    );
}

#[test]
fn imports_are_read_from_crate_and_super_paths() {
    // Given a file `store/writer/hub.rs` naming the bus, its parent and the crate root
    let text = "use crate::bus::EventBus;\nuse super::Reply;\nuse super::super::feed;\n\
                use crate::{config::{A, B}, fleet};\nfn f() { crate::api::error::x() }\n// crate::commented::out";
    // When its named modules are read
    let named = named_modules(text, "store::writer::hub");
    // Then each is found, the comment is not
    let expected: BTreeSet<String> = [
        "bus::EventBus",
        "store::writer::Reply",
        "store::feed",
        "config::A",
        "config::B",
        "fleet",
        "api::error::x",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(named, expected);
}

#[test]
fn the_domain_and_the_wire_types_do_no_io() {
    // Given every file of common's domain and wire folders
    let common = workspace().join("common").join("src");
    let forbidden = [
        "tokio",
        "axum",
        "hyper",
        "rusqlite",
        "reqwest",
        "std::fs",
        "std::net",
        "std::process",
        "crate::server",
        "crate::sqlite",
        "crate::write_gate",
    ];
    let mut found = Vec::new();
    for folder in ["domain", "wire"] {
        let files = rust_files(&common.join(folder));
        assert!(!files.is_empty(), "common/src/{folder} has files");
        for path in files {
            // When its code (not its comments) is read
            let text = fs::read_to_string(&path).expect("readable");
            for (number, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for word in forbidden {
                    if line.contains(&format!("{word}::")) || line.contains(&format!("use {word};")) {
                        found.push(format!("{}:{}: {word}", path.display(), number + 1));
                    }
                }
            }
        }
    }
    // Then none names an I/O crate or module
    assert!(found.is_empty(), "I/O in the pure layers:\n  {}", found.join("\n  "));
}

#[test]
fn the_hubs_handlers_name_no_sql() {
    // Given every file of the hub's HTTP layer
    let api = workspace().join("hub").join("src").join("api");
    let files = rust_files(&api);
    assert!(files.len() > 5, "the hub's api folder was read");
    let mut found = Vec::new();
    for path in files {
        // When its code is read
        let text = fs::read_to_string(&path).expect("readable");
        for (number, line) in text.lines().enumerate() {
            for word in ["rusqlite", "store::schema", "reader::", "Connection"] {
                if !line.trim_start().starts_with("//") && line.contains(word) {
                    found.push(format!("{}:{}: {word}", path.display(), number + 1));
                }
            }
        }
    }
    // Then it reads and writes the log only through EventStore's methods
    assert!(found.is_empty(), "SQL in the handlers:\n  {}", found.join("\n  "));
}
