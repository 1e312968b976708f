//! The module graph of `src/` has no cycle: not between top-level modules (`dhcp`,
//! `inventory`, ...), and not between the submodules of one module (`cli::vm`,
//! `cli::template`, ...). A cycle means no module of it can be understood, tested or started
//! without all the others; `docs/architecture.md` draws the layers this test keeps acyclic.
//!
//! It reads the source, not the compiler: every `crate::a::b` path (also inside
//! `use crate::{a::{b, c}, d}` groups) and every `super::x` is an edge. Comments are skipped.
//! A failure prints each cycle with the files that make its edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `from -> to -> files that make the edge`.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// One source file: its module path (`src/dhcp/engine.rs` -> `["dhcp", "engine"]`) and its text
/// without comments.
struct SourceFile {
    rel: String,
    module: Vec<String>,
    code: String,
}

fn source_files(dir: &Path, root: &Path, out: &mut Vec<SourceFile>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            source_files(&p, root, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let rel = p.strip_prefix(root).expect("under src").to_string_lossy().into_owned();
            let mut module: Vec<String> = rel.trim_end_matches(".rs").split('/').map(String::from).collect();
            if module.last().is_some_and(|l| l == "mod" || l == "lib" || l == "main") {
                module.pop();
            }
            let text = std::fs::read_to_string(&p).expect("read source");
            out.push(SourceFile {
                rel,
                module,
                code: strip_comments(&text),
            });
        }
    }
}

/// The text with `//` comments (doc comments included) and `/* */` blocks removed; string
/// literals are kept as they are (a `//` inside a string is not a comment).
fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            if c == b'\\' && i + 1 < b.len() {
                i += 2;
                continue;
            }
            if c == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            // A char literal '"' is not the start of a string.
            if !(i > 0 && b[i - 1] == b'\'' && b.get(i + 1) == Some(&b'\'')) {
                in_str = true;
            }
            i += 1;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
            continue;
        }
        out.push(c as char);
        i += 1;
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths a use tree starting at `s` names, each as its segments (`a::{b, c::d}` ->
/// `[a, b]`, `[a, c, d]`). Stops at the end of the tree.
fn use_tree(s: &str) -> Vec<Vec<String>> {
    fn parse(s: &[char], i: &mut usize) -> Vec<Vec<String>> {
        skip_ws(s, i);
        if *i < s.len() && s[*i] == '{' {
            *i += 1;
            let mut all = Vec::new();
            loop {
                skip_ws(s, i);
                if *i >= s.len() {
                    return all;
                }
                if s[*i] == '}' {
                    *i += 1;
                    return all;
                }
                if s[*i] == ',' {
                    *i += 1;
                    continue;
                }
                let before = *i;
                all.extend(parse(s, i));
                if *i == before {
                    *i += 1; // not a path (e.g. `*`): step over it
                }
            }
        }
        let start = *i;
        while *i < s.len() && is_ident(s[*i]) {
            *i += 1;
        }
        if *i == start {
            return Vec::new();
        }
        let seg: String = s[start..*i].iter().collect();
        if s.get(*i) == Some(&':') && s.get(*i + 1) == Some(&':') {
            *i += 2;
            let rest = parse(s, i);
            if rest.is_empty() {
                return vec![vec![seg]];
            }
            return rest
                .into_iter()
                .map(|mut r| {
                    r.insert(0, seg.clone());
                    r
                })
                .collect();
        }
        vec![vec![seg]]
    }
    fn skip_ws(s: &[char], i: &mut usize) {
        while *i < s.len() && s[*i].is_whitespace() {
            *i += 1;
        }
    }
    let chars: Vec<char> = s.chars().take(4000).collect();
    parse(&chars, &mut 0)
}

/// Every absolute module path a file names: `crate::...` as written, `super::...` resolved
/// against the file's module (inside an inline `mod x { ... }`, such as `mod tests`, `super`
/// is the file's own module: those paths are resolved one level deeper).
fn referenced_paths(f: &SourceFile) -> Vec<Vec<String>> {
    let code = &f.code;
    let first_inline_mod = code
        .match_indices("mod ")
        .find(|(at, _)| {
            let line_start = code[..*at].rfind('\n').map_or(0, |n| n + 1);
            let prefix = code[line_start..*at].trim();
            let rest = &code[at + 4..];
            let name_end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
            (prefix.is_empty() || prefix == "pub" || prefix.starts_with("pub("))
                && rest[name_end..].trim_start().starts_with('{')
        })
        .map_or(usize::MAX, |(at, _)| at);
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for keyword in ["crate::", "super::"] {
        for (at, _) in code.match_indices(keyword) {
            if at > 0 && (is_ident(bytes[at - 1] as char) || bytes[at - 1] == b':') {
                continue; // `x::super::` or an identifier ending in "crate"
            }
            let mut base: Vec<String> = if keyword == "crate::" {
                Vec::new()
            } else if at > first_inline_mod {
                f.module.clone()
            } else {
                let mut m = f.module.clone();
                m.pop();
                m
            };
            let mut rest = &code[at + keyword.len()..];
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            for p in use_tree(rest) {
                let mut full = base.clone();
                full.extend(p);
                out.push(full);
            }
        }
    }
    out
}

/// The graph among the children of `parent` (the crate's top-level modules for `[]`): an
/// edge `a -> b` when a file inside child `a` names a path inside sibling `b`.
fn graph_under(files: &[SourceFile], parent: &[String], children: &BTreeSet<String>) -> Graph {
    let mut g = Graph::new();
    let depth = parent.len();
    for f in files {
        if f.module.len() <= depth || f.module[..depth] != *parent {
            continue;
        }
        let from = &f.module[depth];
        for path in referenced_paths(f) {
            if path.len() <= depth || path[..depth] != *parent {
                continue;
            }
            let to = &path[depth];
            if to != from && children.contains(to) {
                g.entry(from.clone())
                    .or_default()
                    .entry(to.clone())
                    .or_default()
                    .insert(f.rel.clone());
            }
        }
    }
    g
}

/// The strongly connected components with more than one member (Tarjan).
fn cycles(g: &Graph, nodes: &BTreeSet<String>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.g.get(v) {
            for w in ws.keys() {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            loop {
                let w = t.stack.pop().expect("on stack");
                t.on.remove(w);
                scc.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for n in nodes {
        if !t.index.contains_key(n.as_str()) {
            visit(&mut t, n);
        }
    }
    t.out
}

fn describe(g: &Graph, scc: &[String]) -> String {
    let mut s = format!("cycle among {scc:?}:\n");
    for a in scc {
        for (b, files) in g.get(a).into_iter().flatten() {
            if scc.contains(b) {
                s += &format!("  {a} -> {b} in {files:?}\n");
            }
        }
    }
    s
}

fn crate_files() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&root, &root, &mut files);
    files
}

/// Every module with children, and its children: `[] -> {boot, cli, ...}`, `[cli] -> {vm, ...}`.
fn module_tree(files: &[SourceFile]) -> BTreeMap<Vec<String>, BTreeSet<String>> {
    let mut tree: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        for depth in 0..f.module.len() {
            tree.entry(f.module[..depth].to_vec())
                .or_default()
                .insert(f.module[depth].clone());
        }
    }
    tree
}

#[test]
fn no_module_cycle_at_any_level_of_src() {
    let files = crate_files();
    let tree = module_tree(&files);
    assert!(
        tree.get(&Vec::new())
            .is_some_and(|top| top.contains("dhcp") && top.contains("inventory")),
        "the scan found the crate's modules"
    );
    let mut found = Vec::new();
    for (parent, children) in &tree {
        let g = graph_under(&files, parent, children);
        for scc in cycles(&g, children) {
            found.push(format!("in crate::{}: {}", parent.join("::"), describe(&g, &scc)));
        }
    }
    assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
}

/// The checker itself finds what it must: edges through use groups and `super`, none through
/// comments or strings, and a cycle when there is one.
#[test]
fn the_checker_sees_groups_super_and_cycles_and_ignores_comments() {
    let file = |rel: &str, text: &str| {
        let mut module: Vec<String> = rel.trim_end_matches(".rs").split('/').map(String::from).collect();
        if module.last().is_some_and(|l| l == "mod") {
            module.pop();
        }
        SourceFile {
            rel: rel.into(),
            module,
            code: strip_comments(text),
        }
    };
    let files = vec![
        file(
            "a/mod.rs",
            "use crate::{b::{X, y::Z}, c};\n/// see crate::d\nfn f() { let s = \"crate::d\"; }",
        ),
        file("b.rs", "// crate::a\nfn g() -> crate::c::T { todo!() }"),
        file("c.rs", "pub use crate::a::Q;"),
        file("d.rs", "struct D;"),
        file("a/x.rs", "use super::y::Y;\nmod tests { use super::super::y::W; }"),
        file("a/y.rs", "use super::x::X; mod tests { use super::helper; }"),
    ];
    let tree = module_tree(&files);
    let top = &tree[&Vec::<String>::new()];
    let g = graph_under(&files, &[], top);
    let edges = |a: &str| {
        g.get(a)
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(edges("a"), ["b", "c"]);
    assert_eq!(edges("b"), ["c"]);
    assert_eq!(edges("c"), ["a"]);
    assert!(edges("d").is_empty());
    assert_eq!(cycles(&g, top), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
    let under_a = &tree[&vec!["a".to_string()]];
    let ga = graph_under(&files, &["a".to_string()], under_a);
    assert_eq!(cycles(&ga, under_a), vec![vec!["x".to_string(), "y".into()]]);
    // `super::helper` inside y's inline test module is y's own, not a sibling.
    assert!(!ga.get("y").is_some_and(|m| m.contains_key("helper")));
}
