//! The layout's invariants, checked on the source tree: each is stated as
//! what never happens, and this test fails the build when one does.
//!
//! It parses every workspace `.rs` file with `syn` and never runs or
//! builds anything; the rules are in `ARCHITECTURE.md` ("Invariants").

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::spanned::Spanned;
use syn::visit::{self, Visit};

/// A file may hold this many lines before its `#[cfg(test)]` module.
const MAX_FILE_LINES: usize = 600;
/// A function outside tests may span this many lines.
const MAX_FN_LINES: usize = 150;
/// Functions exempt from the length rule: the route table stays one list.
const LONG_FN_ALLOWED: &[(&str, &str)] = &[("coordinator/src/api/mod.rs", "router")];

/// Where each crate may start a process.
const SPAWNERS: &[&str] = &[
    // The agent's one spawner: every tool and daemon goes through it.
    "agent/src/exec.rs",
    // The coordinator's iperf3 server for the network stage.
    "coordinator/src/iperf.rs",
    // `vetctl ssh` replaces itself with ssh(1) (exec, not spawn).
    "coordinator/src/bin/vetctl/ssh.rs",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e sits in the workspace")
        .to_path_buf()
}

struct Source {
    /// Path relative to the workspace, with `/` separators.
    rel: String,
    text: String,
    file: syn::File,
}

fn sources() -> Vec<Source> {
    let root = workspace();
    let mut out = Vec::new();
    for krate in ["common", "agent", "coordinator", "bench", "e2e", "testkit"] {
        let mut stack = vec![root.join(krate)];
        while let Some(dir) = stack.pop() {
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in entries {
                let path = entry.expect("directory entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&path)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    let file = syn::parse_file(&text)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    let rel = path
                        .strip_prefix(&root)
                        .expect("under the workspace")
                        .to_string_lossy()
                        .replace('\\', "/");
                    out.push(Source { rel, text, file });
                }
            }
        }
    }
    assert!(out.len() > 50, "found only {} source files", out.len());
    out
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

fn is_test_fn(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        let segs: Vec<String> = a
            .path()
            .segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect();
        segs.last().is_some_and(|l| l == "test")
    })
}

/// Whether the file is test code as a whole (integration tests, the
/// end-to-end crate, the dev-only test kit).
fn is_test_file(rel: &str) -> bool {
    rel.split('/').nth(1) == Some("tests") || rel.starts_with("e2e/") || rel.starts_with("testkit/")
}

/// Collects, outside `#[cfg(test)]` modules and test functions: every path
/// used, and every function with its line span.
#[derive(Default)]
struct Collect {
    paths: Vec<(Vec<String>, usize)>,
    /// Paths used as values (not patterns, not types).
    expr_paths: Vec<(Vec<String>, usize)>,
    fns: Vec<(String, usize, usize)>,
}

impl Collect {
    fn push_fn(&mut self, name: &syn::Ident, span: proc_macro2::Span) {
        self.fns
            .push((name.to_string(), span.start().line, span.end().line));
    }
}

impl<'a> Visit<'a> for Collect {
    fn visit_item_mod(&mut self, m: &'a syn::ItemMod) {
        if !is_cfg_test(&m.attrs) {
            visit::visit_item_mod(self, m);
        }
    }
    fn visit_item_fn(&mut self, f: &'a syn::ItemFn) {
        if is_test_fn(&f.attrs) || is_cfg_test(&f.attrs) {
            return;
        }
        self.push_fn(&f.sig.ident, f.span());
        visit::visit_item_fn(self, f);
    }
    fn visit_impl_item_fn(&mut self, f: &'a syn::ImplItemFn) {
        if is_cfg_test(&f.attrs) {
            return;
        }
        self.push_fn(&f.sig.ident, f.span());
        visit::visit_impl_item_fn(self, f);
    }
    fn visit_trait_item_fn(&mut self, f: &'a syn::TraitItemFn) {
        if f.default.is_some() {
            self.push_fn(&f.sig.ident, f.span());
        }
        visit::visit_trait_item_fn(self, f);
    }
    // A pattern names a value to match, and `==`/`!=` compare with one:
    // neither makes it, so neither counts as a value used.
    fn visit_pat(&mut self, p: &'a syn::Pat) {
        let before = self.expr_paths.len();
        visit::visit_pat(self, p);
        self.expr_paths.truncate(before);
    }
    fn visit_expr_binary(&mut self, b: &'a syn::ExprBinary) {
        if matches!(b.op, syn::BinOp::Eq(_) | syn::BinOp::Ne(_)) {
            let before = self.expr_paths.len();
            visit::visit_expr_binary(self, b);
            self.expr_paths.truncate(before);
        } else {
            visit::visit_expr_binary(self, b);
        }
    }
    fn visit_expr_path(&mut self, e: &'a syn::ExprPath) {
        let segs = e
            .path
            .segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect();
        self.expr_paths.push((segs, e.span().start().line));
        visit::visit_expr_path(self, e);
    }
    fn visit_path(&mut self, p: &'a syn::Path) {
        let segs = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.paths.push((segs, p.span().start().line));
        visit::visit_path(self, p);
    }
    fn visit_item_use(&mut self, u: &'a syn::ItemUse) {
        if is_cfg_test(&u.attrs) {
            return;
        }
        let mut prefix = Vec::new();
        use_paths(&u.tree, &mut prefix, &mut self.paths, u.span().start().line);
    }
}

fn use_paths(
    tree: &syn::UseTree,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, usize)>,
    line: usize,
) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_paths(&p.tree, prefix, out, line);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let mut full = prefix.clone();
            full.push(n.ident.to_string());
            out.push((full, line));
        }
        syn::UseTree::Rename(r) => {
            let mut full = prefix.clone();
            full.push(r.ident.to_string());
            out.push((full, line));
        }
        syn::UseTree::Glob(_) => out.push((prefix.clone(), line)),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_paths(t, prefix, out, line);
            }
        }
    }
}

fn collect(src: &Source) -> Collect {
    let mut c = Collect::default();
    c.visit_file(&src.file);
    c
}

/// Lines of the file before its first top-level `#[cfg(test)]` item.
fn lines_before_tests(src: &Source) -> usize {
    let first_test = src
        .file
        .items
        .iter()
        .find(|item| match item {
            syn::Item::Mod(m) => is_cfg_test(&m.attrs),
            _ => false,
        })
        .map(|item| item.span().start().line);
    match first_test {
        Some(line) => line - 1,
        None => src.text.lines().count(),
    }
}

#[test]
fn no_source_file_is_over_the_line_limit() {
    let long: Vec<String> = sources()
        .iter()
        .map(|s| (lines_before_tests(s), &s.rel))
        .filter(|(n, _)| *n > MAX_FILE_LINES)
        .map(|(n, rel)| format!("{rel}: {n} lines"))
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_FILE_LINES} lines before the tests:\n{}",
        long.join("\n")
    );
}

#[test]
fn no_function_outside_tests_is_over_the_line_limit() {
    let mut long = Vec::new();
    for src in sources().iter().filter(|s| !is_test_file(&s.rel)) {
        for (name, start, end) in collect(src).fns {
            let n = end - start + 1;
            let allowed = LONG_FN_ALLOWED.contains(&(src.rel.as_str(), name.as_str()));
            if n > MAX_FN_LINES && !allowed {
                long.push(format!("{}:{start} fn {name}: {n} lines", src.rel));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// Every non-test use of a path whose first segment is `krate`, outside
/// files under one of `allowed`.
fn uses_of(krate: &str, allowed: &str) -> Vec<String> {
    let mut found = Vec::new();
    for src in sources().iter().filter(|s| !is_test_file(&s.rel)) {
        if src.rel.starts_with(allowed) || src.rel.starts_with("bench/") {
            continue;
        }
        for (segs, line) in collect(src).paths {
            if segs.first().is_some_and(|s| s == krate) {
                found.push(format!("{}:{line} {}", src.rel, segs.join("::")));
            }
        }
    }
    found
}

#[test]
fn sqlite_is_spoken_only_by_its_store() {
    let found = uses_of("rusqlite", "coordinator/src/store/sqlite/");
    assert!(
        found.is_empty(),
        "rusqlite outside the SQLite store:\n{}",
        found.join("\n")
    );
}

#[test]
fn http_serving_is_only_in_the_api_edge() {
    let found = uses_of("axum", "coordinator/src/api/");
    assert!(
        found.is_empty(),
        "axum outside coordinator/src/api:\n{}",
        found.join("\n")
    );
}

#[test]
fn processes_are_started_only_by_the_spawners() {
    let mut found = Vec::new();
    for src in sources().iter().filter(|s| !is_test_file(&s.rel)) {
        if src.rel.starts_with("bench/") || SPAWNERS.iter().any(|s| src.rel.starts_with(s)) {
            continue;
        }
        for (segs, line) in collect(src).paths {
            let n = segs.len();
            if n >= 2 && segs[n - 2] == "Command" && segs[n - 1] == "new" {
                found.push(format!("{}:{line} {}", src.rel, segs.join("::")));
            }
        }
    }
    assert!(
        found.is_empty(),
        "Command::new outside the spawners:\n{}",
        found.join("\n")
    );
}

/// The coordinator's top-level module of a file under `coordinator/src/`.
fn coordinator_module(rel: &str) -> Option<String> {
    let rest = rel.strip_prefix("coordinator/src/")?;
    let first = rest.split('/').next()?;
    if first == "bin" || first == "lib.rs" || first == "main.rs" {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_string())
}

#[test]
fn the_coordinators_modules_form_no_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for src in sources() {
        let Some(from) = coordinator_module(&src.rel) else {
            continue;
        };
        let deps = edges.entry(from.clone()).or_default();
        for (segs, _) in collect(&src).paths {
            if segs.first().is_some_and(|s| s == "crate") {
                if let Some(to) = segs.get(1) {
                    if *to != from {
                        deps.insert(to.clone());
                    }
                }
            }
        }
    }
    assert!(
        edges.len() > 8,
        "found only {} coordinator modules",
        edges.len()
    );
    // Depth-first search for a back edge; report the cycle it closes.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            cycles.push(cycle.join(" -> "));
            return;
        }
        if !done.insert(node.to_string()) {
            return;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, path, done, cycles);
        }
        path.pop();
    }
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, &edges, &mut Vec::new(), &mut done, &mut cycles);
    }
    assert!(
        cycles.is_empty(),
        "module cycles in the coordinator:\n{}",
        cycles.join("\n")
    );
}

/// Outcomes only a decider may produce: a stage's pass or failure, a run's
/// result, the run events that end a pipeline.
const VERDICTS: &[(&str, &str)] = &[
    ("StageState", "Passed"),
    ("StageState", "Failed"),
    ("RunResult", "Pass"),
    ("RunResult", "Fail"),
    ("RunEvent", "StageFailed"),
    ("RunEvent", "AllStagesPassed"),
];

/// Where verdicts are made: the gate, and the state machine it drives.
const DECIDERS: &[&str] = &["coordinator/src/gate.rs", "common/src/run_state.rs"];

#[test]
fn only_the_gate_makes_a_verdict_in_the_coordinator() {
    let mut found = Vec::new();
    for src in sources().iter().filter(|s| !is_test_file(&s.rel)) {
        if !src.rel.starts_with("coordinator/src/") || DECIDERS.contains(&src.rel.as_str()) {
            continue;
        }
        for (segs, line) in collect(src).expr_paths {
            let n = segs.len();
            if n >= 2
                && VERDICTS
                    .iter()
                    .any(|(ty, v)| segs[n - 2] == *ty && segs[n - 1] == *v)
            {
                found.push(format!("{}:{line} {}", src.rel, segs.join("::")));
            }
        }
    }
    assert!(
        found.is_empty(),
        "a verdict made outside the gate:\n{}",
        found.join("\n")
    );
}
