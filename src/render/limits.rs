//! Render limits: no template, uploaded or built in, can spin a core or fill the memory.
//!
//! Tera 2 has no fuel and no cancellation, and a thread that spins cannot be killed. So a render
//! must stop *itself*, which it can only do where Tera calls back into our code: functions,
//! filters and the output writer. The design makes sure such a call-back happens often enough:
//!
//! 1. **Every loop iteration calls us.** [`instrument`] puts `{{ __deskprov_tick() }}` at the
//!    start of every `{% for %}` body (with the tag's own whitespace control, so the output is
//!    unchanged). The tick checks a thread-local deadline ([`run`] sets it around a render): the
//!    three nested `range(end=100000)` loops, with or without a `{% set r = range(...) %}` in
//!    front, stop at the time budget. Loops are the only way to repeat work in what an upload may
//!    use: list comprehensions (`[x for x in y]`, loops inside an expression that no tag could
//!    tick), components, `include`, `extends`/`block` and `filter` sections are refused at upload,
//!    so between two ticks a render executes each instruction of the template at most once.
//! 2. **Every stored value is measured.** After each `{% set %}`/`{% set_global %}`,
//!    `{{ __deskprov_guard(v=name) }}` measures the value (logical size, shared parts counted
//!    each time, and nesting depth) and stops the render past the output cap: doubling a string
//!    24 times in a loop fails at 1 MiB instead of building 268 MB. Capture blocks
//!    (`{% set x %}…{% endset %}`) and spreads (`[...a, ...a]`) are refused.
//! 3. **Expressions grow by a bounded factor.** Filters an upload may use either do not grow
//!    their input (`length`, `get`, `sort`, `trim`, …) or are ours and check their result
//!    (`upper`, `lower`); `~` is limited to [`MAX_CONCATS`] per tag, so one expression builds at
//!    most (`MAX_CONCATS` + 1) × the cap. `range` is ours: at most [`MAX_RANGE`] numbers a call,
//!    and it checks the deadline too.
//! 4. **Output is capped.** Rendering goes to a [`Capped`] writer that fails past the cap.
//!
//! The check is a whitelist over a tokenizer that splits the source exactly as Tera's lexer does
//! (`{{`, `{%`, `{#`, `{% raw %}`, strings with escapes): what it does not recognise is refused,
//! so a loop Tera sees cannot be missed. A child process per validation (killable) was the other
//! option; it would not protect renders at fetch time, where a data-dependent template (fine for
//! the sample device, exploding for a device with many keys) must fail alone, with a 500.

use std::cell::Cell;
use std::time::{Duration, Instant};

use tera::{Kwargs, State, Value};

/// How long one render may take and how many bytes it may produce (`[render]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Limits {
    pub(crate) time: Duration,
    pub(crate) max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            time: Duration::from_millis(2000),
            max_bytes: 1 << 20,
        }
    }
}

/// Which limit a render exceeded (its `Display` names the limit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Exceeded {
    Time(Duration),
    Size(usize),
    Depth,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exceeded::Time(d) => {
                let ms = d.as_millis();
                if ms % 1000 == 0 {
                    write!(f, "exceeded the {} s render budget", ms / 1000)
                } else {
                    write!(f, "exceeded the {ms} ms render budget")
                }
            }
            Exceeded::Size(n) => {
                if n % (1 << 20) == 0 {
                    write!(f, "renders more than {} MiB", n >> 20)
                } else if n % 1024 == 0 {
                    write!(f, "renders more than {} KiB", n >> 10)
                } else {
                    write!(f, "renders more than {n} bytes")
                }
            }
            Exceeded::Depth => write!(f, "nests values deeper than {MAX_DEPTH} levels"),
        }
    }
}

/// Numbers one `range()` call may give.
pub(crate) const MAX_RANGE: i128 = 100_000;
/// `~` operators in one tag.
pub(crate) const MAX_CONCATS: usize = 16;
/// Nesting of arrays and maps in a stored value (deeper values would also make dropping them
/// recurse deeply).
const MAX_DEPTH: usize = 32;

const TICK: &str = "__deskprov_tick";
const GUARD: &str = "__deskprov_guard";

#[derive(Clone, Copy)]
struct Budget {
    deadline: Instant,
    limits: Limits,
    tripped: Option<Exceeded>,
}

thread_local! {
    /// The budget of the render running on this thread (renders never migrate threads).
    static BUDGET: Cell<Option<Budget>> = const { Cell::new(None) };
}

/// Runs `f` (one render) under `limits`; returns its result and the limit it tripped, if any.
pub(crate) fn run<T>(limits: Limits, f: impl FnOnce() -> T) -> (T, Option<Exceeded>) {
    let outer = BUDGET.replace(Some(Budget {
        deadline: Instant::now() + limits.time,
        limits,
        tripped: None,
    }));
    let out = f();
    let mine = BUDGET.replace(outer);
    (out, mine.and_then(|b| b.tripped))
}

fn trip(e: Exceeded) -> tera::Error {
    BUDGET.with(|b| {
        if let Some(mut x) = b.get() {
            x.tripped.get_or_insert(e);
            b.set(Some(x));
        }
    });
    tera::Error::message(e.to_string())
}

fn check_time() -> tera::TeraResult<()> {
    match BUDGET.get() {
        Some(b) if Instant::now() >= b.deadline => Err(trip(Exceeded::Time(b.limits.time))),
        _ => Ok(()),
    }
}

fn max_bytes() -> usize {
    BUDGET.get().map_or(usize::MAX, |b| b.limits.max_bytes)
}

fn check_size(n: usize) -> tera::TeraResult<()> {
    let max = max_bytes();
    if n > max {
        return Err(trip(Exceeded::Size(max)));
    }
    Ok(())
}

/// The logical size of a value in bytes (roughly as rendered), counting up to just past `limit`.
fn measure(v: &Value, limit: usize, depth: usize) -> Result<usize, Exceeded> {
    if depth > MAX_DEPTH {
        return Err(Exceeded::Depth);
    }
    let mut n = 0usize;
    if let Some(s) = v.as_str() {
        n = s.len();
    } else if let Some(a) = v.as_array() {
        n = 2;
        for x in a {
            n += measure(x, limit, depth + 1)? + 2;
            if n > limit {
                break;
            }
        }
    } else if let Some(m) = v.as_map() {
        n = 2;
        for (k, x) in m {
            n += k.as_str().map_or(8, str::len) + measure(x, limit, depth + 1)? + 4;
            if n > limit {
                break;
            }
        }
    } else {
        n += 8;
    }
    Ok(n)
}

fn tick(_: Kwargs, _: &State) -> tera::TeraResult<String> {
    check_time()?;
    Ok(String::new())
}

fn guard(kwargs: Kwargs, _: &State) -> tera::TeraResult<String> {
    check_time()?;
    let v: Value = kwargs.get("v")?.unwrap_or_else(Value::none);
    let max = max_bytes();
    match measure(&v, max, 0) {
        Ok(n) => check_size(n)?,
        Err(e) => return Err(trip(e)),
    }
    Ok(String::new())
}

/// Tera's `range(start?, end, step_by?)`, bounded to [`MAX_RANGE`] numbers and the deadline.
fn range(kwargs: Kwargs, _: &State) -> tera::TeraResult<Vec<i128>> {
    check_time()?;
    let start = kwargs.get::<i128>("start")?.unwrap_or_default();
    let end = kwargs.must_get::<i128>("end")?;
    let step = kwargs.get::<i128>("step_by")?.unwrap_or(1);
    if step == 0 {
        return Err(tera::Error::message("range: step_by must not be 0"));
    }
    let len = if step > 0 {
        end.saturating_sub(start).max(0).saturating_add(step - 1) / step
    } else {
        start.saturating_sub(end).max(0).saturating_add(-step - 1) / -step
    };
    if len > MAX_RANGE {
        return Err(tera::Error::message(format!(
            "range gives at most {MAX_RANGE} numbers (this one {len})"
        )));
    }
    Ok((0..len).map(|i| start + i * step).collect())
}

fn upper(val: tera::StringInput, _: Kwargs, _: &State) -> tera::TeraResult<Value> {
    let out = val.as_str().to_uppercase();
    check_size(out.len())?;
    Ok(val.inherit_safety(out))
}

fn lower(val: tera::StringInput, _: Kwargs, _: &State) -> tera::TeraResult<Value> {
    let out = val.as_str().to_lowercase();
    check_size(out.len())?;
    Ok(val.inherit_safety(out))
}

/// Registers the tick, the guard and our bounded `range`, `upper` and `lower`.
pub(crate) fn register(tera: &mut tera::Tera) {
    tera.register_function(TICK, tick);
    tera.register_function(GUARD, guard);
    tera.register_function("range", range);
    tera.register_filter("upper", upper);
    tera.register_filter("lower", lower);
}

/// A writer that fails once more than `max` bytes were written.
pub(crate) struct Capped {
    pub(crate) buf: Vec<u8>,
    max: usize,
}

impl Capped {
    pub(crate) fn new(max: usize) -> Capped {
        Capped {
            buf: Vec::with_capacity(4096),
            max,
        }
    }
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.max {
            trip(Exceeded::Size(self.max));
            return Err(std::io::Error::other(Exceeded::Size(self.max).to_string()));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Filters an uploaded template may use: none grows its input by more than our own checks allow.
const FILTERS: &[&str] = &[
    "length",
    "get",
    "default",
    "upper",
    "lower",
    "sort",
    "first",
    "last",
    "nth",
    "trim",
    "trim_start",
    "trim_end",
    "int",
    "float",
    "str",
    "abs",
    "round",
    "reverse",
    "unique",
    "keys",
    "values",
    "pairs",
    "wordcount",
    "truncate",
    "safe",
    "split",
];
/// Functions an uploaded template may call.
const FUNCTIONS: &[&str] = &["range"];
/// Statements an uploaded template may use.
const TAGS: &[&str] = &[
    "if",
    "elif",
    "else",
    "endif",
    "for",
    "endfor",
    "set",
    "set_global",
    "break",
    "continue",
];

/// A template source with the ticks and guards put in.
#[derive(Debug)]
pub(crate) struct Instrumented {
    pub(crate) source: String,
    /// (line, column after the tag, bytes inserted there): to report the author's columns.
    pub(crate) shifts: Vec<(usize, usize, usize)>,
}

impl Instrumented {
    /// The author's column for a (1-based line, column) of the instrumented source.
    pub(crate) fn column(&self, line: usize, column: usize) -> usize {
        let before: usize = self
            .shifts
            .iter()
            .filter(|(l, c, _)| *l == line && *c < column)
            .map(|(_, _, n)| n)
            .sum();
        column.saturating_sub(before)
    }
}

/// Why an upload is refused before it is rendered: (1-based line, 1-based column, message).
pub(crate) type Refusal = (usize, usize, String);

#[derive(Debug, PartialEq)]
enum Tok<'a> {
    Ident(&'a str),
    Op(&'a str),
    Lit,
}

/// Puts the ticks and guards into `src`. With `strict` (uploads) it also refuses everything the
/// whitelist does not allow. Mirrors Tera's lexer (default delimiters).
pub(crate) fn instrument(src: &str, strict: bool) -> Result<Instrumented, Refusal> {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len() + 256);
    let mut shifts = Vec::new();
    let mut i = 0;
    let mut copied = 0;
    let at = |pos: usize| -> (usize, usize) {
        let before = &src[..pos];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        (line, col)
    };
    let refuse = |pos: usize, msg: String| -> Refusal {
        let (l, c) = at(pos);
        (l, c, msg)
    };
    while i + 1 < b.len() {
        let two = &b[i..i + 2];
        if two != b"{{" && two != b"{%" && two != b"{#" {
            i += 1;
            continue;
        }
        let start = i;
        let mut p = i + 2;
        if b.get(p) == Some(&b'-') {
            p += 1;
        }
        if two == b"{#" {
            let end = find(b, p, b"#}").ok_or_else(|| refuse(start, "unclosed comment".into()))?;
            i = end + 2;
            continue;
        }
        if two == b"{%" {
            if let Some(after) = skip_tag(src, p, "raw") {
                // Tera skips to the first `{%` that is an `endraw` tag.
                let mut q = after;
                let mut found = None;
                while let Some(s) = find(b, q, b"{%") {
                    q = s + 2;
                    if let Some(e) = skip_tag(src, q, "endraw") {
                        found = Some(e);
                        break;
                    }
                }
                i = found.ok_or_else(|| refuse(start, "unclosed raw block".into()))?;
                continue;
            }
        }
        let is_tag = two == b"{%";
        let (toks, end, trims) = lex_tag(src, p, is_tag).map_err(|(pos, m)| refuse(pos, m))?;
        i = end;
        let inject = match (is_tag, toks.first()) {
            (true, Some((Tok::Ident("for"), _))) => Some(format!("{TICK}()")),
            (true, Some((Tok::Ident("set" | "set_global"), _))) => match toks.get(1) {
                Some((Tok::Ident(name), _)) => Some(format!("{GUARD}(v={name})")),
                _ => None,
            },
            _ => None,
        };
        if strict {
            check(&toks, is_tag).map_err(|(pos, m)| refuse(pos, m))?;
        }
        if let Some(call) = inject {
            let text = if trims {
                format!("{{{{- {call} -}}}}")
            } else {
                format!("{{{{ {call} }}}}")
            };
            out.push_str(&src[copied..end]);
            copied = end;
            let (l, c) = at(end);
            shifts.push((l, c, text.chars().count()));
            out.push_str(&text);
        }
    }
    out.push_str(&src[copied..]);
    Ok(Instrumented {
        source: out,
        shifts,
    })
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|x| x + from)
}

/// Tera's `skip_tag`: `-? ws* name ws* -? %}` at `pos`; the offset after it.
fn skip_tag(src: &str, pos: usize, name: &str) -> Option<usize> {
    let mut s = &src[pos..];
    s = s.strip_prefix('-').unwrap_or(s);
    s = s.trim_start_matches(|c: char| c.is_ascii_whitespace());
    s = s.strip_prefix(name)?;
    s = s.trim_start_matches(|c: char| c.is_ascii_whitespace());
    s = s.strip_prefix('-').unwrap_or(s);
    s = s.strip_prefix("%}")?;
    Some(src.len() - s.len())
}

type Lexed<'a> = (Vec<(Tok<'a>, usize)>, usize, bool);

/// The tokens of one `{{ }}` or `{% %}` starting at `p` (after the delimiter): the tokens with
/// their offsets, the offset after the closing delimiter, and whether it trims (`-%}`).
fn lex_tag(src: &str, mut p: usize, is_tag: bool) -> Result<Lexed<'_>, (usize, String)> {
    let b = src.as_bytes();
    let close: &[u8] = if is_tag { b"%}" } else { b"}}" };
    let mut toks = Vec::new();
    loop {
        while p < b.len() && b[p].is_ascii_whitespace() {
            p += 1;
        }
        if p >= b.len() {
            return Err((p, "unclosed tag".into()));
        }
        if b[p] == b'-' && b.get(p + 1..p + 3) == Some(close) {
            return Ok((toks, p + 3, true));
        }
        if b.get(p..p + 2) == Some(close) {
            return Ok((toks, p + 2, false));
        }
        let start = p;
        let c = b[p];
        if b.get(p..p + 3) == Some(b"...") {
            toks.push((Tok::Op("..."), start));
            p += 3;
            continue;
        }
        const TWO: &[&[u8]] = &[
            b"//", b"**", b"==", b"!=", b">=", b"<=", b"</", b"?.", b"?[",
        ];
        if let Some(op) = TWO.iter().find(|o| b.get(p..p + 2) == Some(**o)) {
            toks.push((Tok::Op(std::str::from_utf8(op).unwrap_or("")), start));
            p += 2;
            continue;
        }
        if matches!(c, b'\'' | b'"' | b'`') {
            p += 1;
            let mut escaped = false;
            while p < b.len() && (escaped || b[p] != c) {
                escaped = !escaped && b[p] == b'\\';
                p += 1;
            }
            if p >= b.len() {
                return Err((start, "unclosed string".into()));
            }
            p += 1;
            toks.push((Tok::Lit, start));
            continue;
        }
        if c.is_ascii_digit() {
            while p < b.len() && (b[p].is_ascii_digit() || b[p] == b'.') {
                p += 1;
            }
            toks.push((Tok::Lit, start));
            continue;
        }
        if b"+-*/%!.,:~|=><()[]{}@".contains(&c) {
            toks.push((Tok::Op(&src[p..p + 1]), start));
            p += 1;
            continue;
        }
        if c == b'_' || c.is_ascii_alphabetic() {
            while p < b.len() && (b[p] == b'_' || b[p].is_ascii_alphanumeric()) {
                p += 1;
            }
            toks.push((Tok::Ident(&src[start..p]), start));
            continue;
        }
        return Err((start, "unexpected character in a tag".into()));
    }
}

/// The whitelist for uploads, over one tag's tokens.
fn check(toks: &[(Tok<'_>, usize)], is_tag: bool) -> Result<(), (usize, String)> {
    let mut rest = toks;
    if is_tag {
        let Some((Tok::Ident(kw), pos)) = toks.first() else {
            return Err((toks.first().map_or(0, |t| t.1), "empty tag".into()));
        };
        if !TAGS.contains(kw) {
            return Err((
                *pos,
                format!("{{% {kw} %}} is not allowed in an uploaded template"),
            ));
        }
        if matches!(*kw, "set" | "set_global") && !matches!(toks.get(2), Some((Tok::Op("="), _))) {
            return Err((
                *pos,
                format!("{{% {kw} %}} needs `name = value` (no capture blocks)"),
            ));
        }
        rest = &toks[1..];
    }
    let mut concats = 0;
    for (k, (t, pos)) in rest.iter().enumerate() {
        let prev = k.checked_sub(1).map(|j| &rest[j].0);
        let next = rest.get(k + 1).map(|x| &x.0);
        match t {
            Tok::Op("...") => return Err((*pos, "spreads (`...`) are not allowed".into())),
            Tok::Op("~") => {
                concats += 1;
                if concats > MAX_CONCATS {
                    return Err((*pos, format!("more than {MAX_CONCATS} `~` in one tag")));
                }
            }
            Tok::Op("<" | "</") if next.is_some_and(|n| matches!(n, Tok::Ident(_))) => {
                // `<Name` starts a component call; `a < b` has a space or a value after it.
                if matches!(next, Some(Tok::Ident(n)) if n.starts_with(|c: char| c.is_ascii_uppercase()))
                {
                    return Err((*pos, "components are not allowed".into()));
                }
            }
            Tok::Ident("for") => {
                return Err((*pos, "loops inside expressions are not allowed".into()))
            }
            Tok::Ident(name) if prev == Some(&Tok::Op("|")) && !FILTERS.contains(name) => {
                return Err((*pos, format!("the filter `{name}` is not allowed")));
            }
            Tok::Ident(name)
                if next == Some(&Tok::Op("("))
                    && !matches!(prev, Some(Tok::Op("." | "|")))
                    && !matches!(prev, Some(Tok::Ident("is" | "not")))
                    && !FUNCTIONS.contains(name) =>
            {
                return Err((*pos, format!("the function `{name}` is not allowed")));
            }
            Tok::Ident(name) if name.starts_with("__deskprov") => {
                return Err((*pos, format!("`{name}` is reserved")));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, limits: Limits) -> (Result<String, tera::Error>, Option<Exceeded>) {
        let i = instrument(src, true).expect("allowed");
        let mut t = tera::Tera::new();
        register(&mut t);
        t.add_raw_template("t", &i.source).unwrap();
        run(limits, || {
            let mut w = Capped::new(limits.max_bytes);
            t.render_to("t", &tera::Context::new(), &mut w)
                .map(|()| String::from_utf8(w.buf).unwrap())
        })
    }

    fn quick() -> Limits {
        Limits {
            time: Duration::from_millis(200),
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn the_tick_stops_silent_nested_loops_over_a_stored_range() {
        let src = "{% set r = range(end=10000) %}{% for a in r %}{% for b in r %}{% for c in r %}{% endfor %}{% endfor %}{% endfor %}";
        let t0 = Instant::now();
        let (out, why) = render(src, quick());
        assert!(out.is_err());
        assert_eq!(why, Some(Exceeded::Time(Duration::from_millis(200))));
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }

    #[test]
    fn range_is_bounded_per_call() {
        let (out, why) = render("{% for a in range(end=100001) %}{% endfor %}", quick());
        assert!(out.unwrap_err().to_string().contains("at most 100000"));
        assert_eq!(why, None);
        let (out, _) = render(
            "{% for a in range(start=2, end=8, step_by=3) %}{{ a }},{% endfor %}",
            quick(),
        );
        assert_eq!(out.unwrap(), "2,5,");
    }

    #[test]
    fn the_guard_stops_a_doubling_string() {
        // In Tera 2 a `set` inside a loop is local to the iteration: this one does not double.
        let local = r#"{% set s = "x" %}{% for i in range(end=40) %}{% set s = s ~ s %}{% endfor %}{{ s }}"#;
        assert_eq!(render(local, quick()).0.unwrap(), "x");
        // `set_global` does: 2^40 bytes unless something stops it.
        let global = r#"{% set s = "x" %}{% for i in range(end=40) %}{% set_global s = s ~ s %}{% endfor %}{{ s }}"#;
        let (out, why) = render(global, quick());
        assert!(out.is_err());
        assert_eq!(why, Some(Exceeded::Size(1 << 20)));
    }

    #[test]
    fn the_guard_stops_deep_nesting() {
        let src =
            r#"{% set a = [] %}{% for i in range(end=100) %}{% set_global a = [a] %}{% endfor %}"#;
        assert_eq!(render(src, quick()).1, Some(Exceeded::Depth));
    }

    #[test]
    fn the_writer_caps_output() {
        let limits = Limits {
            max_bytes: 1000,
            ..quick()
        };
        let (out, why) = render("{% for i in range(end=2000) %}x{% endfor %}", limits);
        assert!(out.is_err());
        assert_eq!(why, Some(Exceeded::Size(1000)));
        assert_eq!(
            Exceeded::Size(1 << 20).to_string(),
            "renders more than 1 MiB"
        );
        assert_eq!(
            Exceeded::Time(Duration::from_secs(2)).to_string(),
            "exceeded the 2 s render budget"
        );
    }

    #[test]
    fn instrumenting_keeps_the_output_and_whitespace_control() {
        let src = "{% set n = 2 -%}\n  {%- for i in range(end=n) -%}\n  [{{ i }}]\n{%- endfor %}\n{% raw %}{% for x in y %}{% endraw %}";
        let mut plain = tera::Tera::new();
        plain.add_raw_template("t", src).unwrap();
        let want = plain.render("t", &tera::Context::new()).unwrap();
        assert_eq!(render(src, quick()).0.unwrap(), want);
        let i = instrument(src, true).unwrap();
        assert_eq!(
            i.source.matches(TICK).count(),
            1,
            "raw content is not a loop"
        );
        assert_eq!(i.source.matches(GUARD).count(), 1);
    }

    #[test]
    fn the_static_check_refuses_what_could_repeat_or_grow_unseen() {
        for (src, why) in [
            (
                "{{ [1 for a in range(end=3)] }}",
                "loops inside expressions",
            ),
            ("{% set a = [...b, ...b] %}", "spreads"),
            ("{% set x %}a{% endset %}", "capture"),
            ("{% filter upper %}a{% endfilter %}", "filter"),
            ("{% include \"x\" %}", "include"),
            ("{% extends \"x\" %}", "extends"),
            ("{% component A() %}{% endcomponent %}", "component"),
            ("{{ a | replace(from=\"x\", to=\"xx\") }}", "replace"),
            ("{{ __deskprov_tick() }}", "not allowed"),
            ("{{ throw(message=\"x\") }}", "throw"),
            ("{{ a~a~a~a~a~a~a~a~a~a~a~a~a~a~a~a~a~a }}", "`~`"),
        ] {
            let e = instrument(src, true).expect_err(src);
            assert!(e.2.contains(why), "{src}: {e:?}");
        }
        // Ordinary template code passes.
        let ok = "{% for l in lines %}{% if l.keys | length > 0 and l.kind is containing(\"p\") %}{{ l.label | default(value=\"\") | upper }}{% endif %}{% endfor %}{% if a < b %}{% endif %}";
        instrument(ok, true).unwrap();
    }

    #[test]
    fn columns_are_reported_in_the_authors_source() {
        let i = instrument("{% for a in b %} {{ x }}", true).unwrap();
        let inserted = i.shifts[0].2;
        assert_eq!(i.column(1, 18 + inserted), 18);
        assert_eq!(i.column(1, 5), 5);
    }
}
