//! Small web helpers of the console: form bodies, path segments, problems shown at fields.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;

/// An `application/x-www-form-urlencoded` body, in order (a name may repeat).
#[derive(Debug, Default)]
pub(crate) struct Form(pub(crate) Vec<(String, String)>);

impl Form {
    pub(crate) fn parse(body: &[u8]) -> Form {
        let s = String::from_utf8_lossy(body);
        Form(
            s.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    /// The first value of `name` ("" when absent).
    pub(crate) fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// The trimmed value, or None when empty.
    pub(crate) fn opt(&self, name: &str) -> Option<String> {
        let v = self.get(name).trim();
        (!v.is_empty()).then(|| v.to_string())
    }

    /// A checkbox: present means checked.
    pub(crate) fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The submitted values, for re-showing a form after an error.
    pub(crate) fn values(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.0 {
            if k != "_csrf" {
                m.entry(k.clone())
                    .or_insert_with(|| Value::String(v.clone()));
            }
        }
        Value::Object(m)
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a path segment or query value.
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// An API problem as a page shows it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Problem {
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) detail: String,
    pub(crate) field: Option<String>,
    pub(crate) line: Option<u64>,
    pub(crate) column: Option<u64>,
}

impl Problem {
    pub(crate) fn of(body: &Value, status: StatusCode) -> Problem {
        let s = |k: &str| body[k].as_str().map(str::to_string);
        Problem {
            status: status.as_u16(),
            code: s("code").unwrap_or_else(|| "error".into()),
            detail: s("detail").unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("the request failed")
                    .to_string()
            }),
            field: s("field"),
            line: body["line"].as_u64(),
            column: body["column"].as_u64(),
        }
    }

    pub(crate) fn title(&self) -> &'static str {
        match self.status {
            404 => "Not found",
            403 => "Not allowed",
            401 => "Signed out",
            _ => "Error",
        }
    }

    /// The form field this problem is shown at: the API's `field`, else the field a code
    /// belongs to in this form (`fields`: code → field), else none (shown at the top).
    pub(crate) fn at(&self, fields: &[(&str, &str)], known: &[&str]) -> Option<String> {
        let f = self.field.as_deref().map(|f| f.trim_start_matches('.'));
        if let Some(f) = f {
            // `sip.username` → `sip.username`; `members[0].extension` → `members`.
            let base = f.split(['[', '.']).next().unwrap_or(f);
            for k in [f, base] {
                if known.contains(&k) {
                    return Some(k.to_string());
                }
            }
        }
        fields
            .iter()
            .find(|(c, _)| *c == self.code)
            .map(|(_, f)| f.to_string())
    }
}

/// Errors of a form, by field (`""`: the form as a whole).
pub(crate) fn errors(p: &Problem, fields: &[(&str, &str)], known: &[&str]) -> Value {
    let mut m: BTreeMap<String, &Problem> = BTreeMap::new();
    m.insert(p.at(fields, known).unwrap_or_default(), p);
    serde_json::to_value(m).unwrap_or(Value::Null)
}

/// A line-by-line diff (longest common subsequence), as rows `{op, old, new, text}`.
pub(crate) fn diff(old: &str, new: &str) -> Vec<Value> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Bounded: templates are small; beyond this the diff says only that they differ.
    if a.len().saturating_mul(b.len()) > 4_000_000 {
        return vec![
            serde_json::json!({"op": "note", "text": "too large to compare line by line"}),
        ];
    }
    let (n, m) = (a.len(), b.len());
    let mut l = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            l[i][j] = if a[i] == b[j] {
                l[i + 1][j + 1] + 1
            } else {
                l[i + 1][j].max(l[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(serde_json::json!({"op": " ", "old": i + 1, "new": j + 1, "text": a[i]}));
            i += 1;
            j += 1;
        } else if j < m && (i == n || l[i][j + 1] >= l[i + 1][j]) {
            out.push(serde_json::json!({"op": "+", "old": null, "new": j + 1, "text": b[j]}));
            j += 1;
        } else {
            out.push(serde_json::json!({"op": "-", "old": i + 1, "new": null, "text": a[i]}));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode_plus_and_percent_and_keep_repeats() {
        let f = Form::parse(b"a=x+y&b=%41%2f&a=2&c");
        assert_eq!(f.get("a"), "x y");
        assert_eq!(f.get("b"), "A/");
        assert_eq!(f.all("a"), vec!["x y", "2"]);
        assert!(f.checked("c"));
        assert_eq!(f.get("zz"), "");
    }

    #[test]
    fn a_problem_without_a_field_is_shown_at_the_field_its_code_belongs_to() {
        let p = Problem::of(
            &serde_json::json!({"code": "line_port_in_use", "detail": "taken"}),
            StatusCode::CONFLICT,
        );
        assert_eq!(
            p.at(&[("line_port_in_use", "line_port")], &["line_port"]),
            Some("line_port".into())
        );
        let p = Problem::of(
            &serde_json::json!({"code": "validation", "field": ".label", "detail": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
        assert_eq!(p.at(&[], &["label"]), Some("label".into()));
    }

    #[test]
    fn diff_marks_added_and_removed_lines() {
        let d = diff("a\nb\nc", "a\nc\nd");
        let ops: Vec<&str> = d.iter().map(|r| r["op"].as_str().unwrap()).collect();
        assert_eq!(ops, vec![" ", "-", " ", "+"]);
    }
}
