//! Layering: which top-level module may name which. Every `src/**/*.rs` is scanned for
//! `crate::<module>` paths (in `use` declarations, braced groups and inline paths); comments,
//! doc comments and string literals do not count. A module naming one it must never import is
//! reported as `file:line`.
//!
//! The rules (ARCHITECTURE.md): `domain` knows nothing of storage, HTTP, SIP or rendering; the
//! store knows nothing of its readers; `admin` and `phone` share the phone read path through
//! `render`, never through each other; the catalogue is data and knows no layer above it.

use std::path::{Path, PathBuf};

/// Module → the modules it must never import.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "domain",
        &["store", "phone", "admin", "sync", "render", "server"],
    ),
    ("phone", &["admin"]),
    ("admin", &["phone"]),
    ("store", &["render", "phone", "admin", "sync"]),
    ("catalog", &["store", "phone", "admin", "sync"]),
    // The console is a client of the admin API: no rules, no store operations of its own.
    ("console", &["store", "phone", "sync", "render"]),
];

/// One `crate::<name>` reference: its 1-based line and the first path segment after `crate::`.
#[derive(Debug, PartialEq)]
struct CratePath {
    line: usize,
    module: String,
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The source with every comment (line, block, doc) and every string or char literal replaced
/// by spaces; newlines are kept so line numbers stay the same.
fn code_only(src: &str) -> Vec<char> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::with_capacity(c.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        let prev_ident = i > 0 && is_ident(c[i - 1]);
        if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            // Block comments nest in Rust.
            let mut depth = 0usize;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.extend([' ', ' ']);
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.extend([' ', ' ']);
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if ch == 'r'
            && (!prev_ident || (i >= 1 && c[i - 1] == 'b' && (i < 2 || !is_ident(c[i - 2]))))
            && matches!(next, Some('"') | Some('#'))
            && {
                let mut j = i + 1;
                while c.get(j) == Some(&'#') {
                    j += 1;
                }
                c.get(j) == Some(&'"')
            }
        {
            // Raw string r#"..."#: ends at a quote followed by as many hashes.
            let mut j = i + 1;
            let mut hashes = 0;
            while c[j] == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1; // the opening quote
            while j < c.len() {
                if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.extend(c[i..j.min(c.len())].iter().map(|&x| blank(x)));
            i = j;
        } else if ch == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(c.len());
            out.extend(c[i..end].iter().map(|&x| blank(x)));
            i = end;
        } else if ch == '\'' && next == Some('\\') {
            // Escaped char literal: '\n', '\'', '\u{..}'.
            let mut j = i + 3;
            while j < c.len() && c[j] != '\'' {
                j += 1;
            }
            let end = (j + 1).min(c.len());
            out.extend(c[i..end].iter().map(|&x| blank(x)));
            i = end;
        } else if ch == '\'' && c.get(i + 2) == Some(&'\'') {
            out.extend([' ', ' ', ' ']);
            i += 3;
        } else {
            // Code, including a lifetime's quote.
            out.push(ch);
            i += 1;
        }
    }
    out
}

/// Every `crate::<module>` path in `src`, outside comments and strings. A braced group
/// (`crate::{a::X, b}`) gives one entry per item, on the item's own line.
fn crate_paths(src: &str) -> Vec<CratePath> {
    let c = code_only(src);
    let mut line_of = Vec::with_capacity(c.len());
    let mut line = 1;
    for &ch in &c {
        line_of.push(line);
        if ch == '\n' {
            line += 1;
        }
    }
    let skip_ws = |mut j: usize| {
        while j < c.len() && c[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let ident_at = |j: usize| {
        let mut k = j;
        while k < c.len() && is_ident(c[k]) {
            k += 1;
        }
        (c[j..k].iter().collect::<String>(), k)
    };
    let mut found = Vec::new();
    let word: Vec<char> = "crate".chars().collect();
    let mut i = 0;
    while i + word.len() <= c.len() {
        let starts = c[i..i + word.len()] == word[..]
            && (i == 0 || !is_ident(c[i - 1]))
            && c.get(i + word.len()).is_none_or(|&x| !is_ident(x));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = skip_ws(i + word.len());
        if !(c.get(j) == Some(&':') && c.get(j + 1) == Some(&':')) {
            i += word.len();
            continue;
        }
        j = skip_ws(j + 2);
        if c.get(j) == Some(&'{') {
            // One entry per item of the group: the first identifier after `{` or a comma at
            // the group's own depth.
            let mut depth = 0usize;
            let mut item_start = true;
            while j < c.len() {
                match c[j] {
                    '{' => {
                        depth += 1;
                        item_start = depth == 1;
                        j += 1;
                    }
                    '}' => {
                        depth -= 1;
                        j += 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' => {
                        item_start = depth == 1;
                        j += 1;
                    }
                    x if item_start && is_ident(x) => {
                        let (name, k) = ident_at(j);
                        if name != "self" {
                            found.push(CratePath {
                                line: line_of[j],
                                module: name,
                            });
                        }
                        item_start = false;
                        j = k;
                    }
                    x => {
                        if !x.is_whitespace() {
                            item_start = false;
                        }
                        j += 1;
                    }
                }
            }
            i = j;
        } else {
            let (name, k) = ident_at(j);
            if !name.is_empty() {
                found.push(CratePath {
                    line: line_of[j],
                    module: name,
                });
            }
            i = k.max(i + word.len());
        }
    }
    found
}

/// The top-level module a file under `src/` belongs to: `src/admin/x.rs` → `admin`,
/// `src/server.rs` → `server`.
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .unwrap_or_default();
    first.strip_suffix(".rs").unwrap_or(&first).to_string()
}

/// The forbidden imports in one file, as `file:line: from → to: <source line>`.
fn violations(file: &str, module: &str, src: &str) -> Vec<String> {
    let Some((_, banned)) = FORBIDDEN.iter().find(|(m, _)| *m == module) else {
        return Vec::new();
    };
    let lines: Vec<&str> = src.lines().collect();
    crate_paths(src)
        .into_iter()
        .filter(|p| banned.contains(&p.module.as_str()))
        .map(|p| {
            let text = lines.get(p.line - 1).map(|l| l.trim()).unwrap_or("");
            format!("{file}:{}: {module} → {}: {text}", p.line, p.module)
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every source file as (path relative to the crate root, its top-level module, its text).
fn sources() -> Vec<(String, String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap();
            let text = std::fs::read_to_string(&p).unwrap();
            (format!("src/{}", rel.display()), module_of(rel), text)
        })
        .collect()
}

#[test]
fn no_module_imports_one_it_must_never_import() {
    let found: Vec<String> = sources()
        .iter()
        .flat_map(|(file, module, text)| violations(file, module, text))
        .collect();
    assert!(
        found.is_empty(),
        "{} forbidden imports:\n{}",
        found.len(),
        found.join("\n")
    );
}

/// Guards the main test against passing on nothing: every module the rules name exists, each
/// one with rules has files that were scanned, and the scan finds `crate::` paths at all.
#[test]
fn every_module_the_rules_name_exists_and_is_scanned() {
    let all = sources();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for (from, banned) in FORBIDDEN {
        for m in std::iter::once(from).chain(banned.iter()) {
            assert!(
                src.join(m).is_dir() || src.join(format!("{m}.rs")).is_file(),
                "the rules name a module `{m}` that src/ does not have"
            );
        }
        let files = all.iter().filter(|(_, m, _)| m == from).count();
        assert!(files > 0, "no source files for `{from}`");
    }
    let paths: usize = all.iter().map(|(_, _, t)| crate_paths(t).len()).sum();
    assert!(paths > 0, "the scan found no crate:: paths in src/");
}

#[test]
fn scanner_finds_a_forbidden_use_and_an_inline_path() {
    let src = "use std::fmt;\nuse crate::store::Store;\n\nfn f() {\n    let _ = crate::render::Rendered::default();\n}\n";
    assert_eq!(
        crate_paths(src),
        vec![
            CratePath {
                line: 2,
                module: "store".into()
            },
            CratePath {
                line: 5,
                module: "render".into()
            },
        ]
    );
    let v = violations("src/domain/x.rs", "domain", src);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(
        v[0].starts_with("src/domain/x.rs:2: domain → store"),
        "{v:?}"
    );
    assert!(
        v[1].starts_with("src/domain/x.rs:5: domain → render"),
        "{v:?}"
    );
}

#[test]
fn scanner_reads_every_item_of_a_braced_use_on_its_line() {
    let src = "use crate::{\n    domain::{Mac, Device},\n    self,\n    phone::preview,\n};\n";
    let found: Vec<(usize, String)> = crate_paths(src)
        .into_iter()
        .map(|p| (p.line, p.module))
        .collect();
    assert_eq!(found, vec![(2, "domain".into()), (4, "phone".into())]);
    assert_eq!(violations("src/admin/a.rs", "admin", src).len(), 1);
}

#[test]
fn scanner_ignores_comments_doc_comments_and_strings() {
    let src = r##"//! Unlike crate::phone, this module ...
/// See [`crate::phone::preview`].
// use crate::phone::preview;
/* use crate::phone::x; /* nested crate::phone */ still a comment crate::phone */
fn f() -> &'static str {
    let _c = '"';
    let _q = '\'';
    let _s = "use crate::phone::x;";
    let _r = r#"crate::phone "quoted" "#;
    "crate::phone"
}
use crate::domain::Mac; // crate::phone in a trailing comment
"##;
    let found: Vec<(usize, String)> = crate_paths(src)
        .into_iter()
        .map(|p| (p.line, p.module))
        .collect();
    assert_eq!(found, vec![(12, "domain".into())]);
    assert!(violations("src/admin/a.rs", "admin", src).is_empty());
}

#[test]
fn scanner_does_not_take_other_words_for_crate() {
    let src = "use my_crate::phone;\nuse crates::phone;\npub(crate) fn f() {}\n";
    assert!(crate_paths(src).is_empty(), "{:?}", crate_paths(src));
}

#[test]
fn a_module_may_import_what_its_rules_allow() {
    let src = "use crate::store::Store;\nuse crate::render::Renderer;\n";
    assert!(violations("src/admin/a.rs", "admin", src).is_empty());
    assert!(violations("src/phone/a.rs", "phone", src).is_empty());
    assert_eq!(module_of(Path::new("admin/devices.rs")), "admin");
    assert_eq!(module_of(Path::new("server.rs")), "server");
}
