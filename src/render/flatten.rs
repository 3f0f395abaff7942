//! Rendered files as key=value facts, for checks that cannot drift with formatting.
//!
//! - `key = value` and `key: value` files (Yealink, Mitel): one fact per line; `#` and `!`
//!   comments and blank lines are skipped.
//! - XML: one fact per attribute (`<path>@<attr>`) and per element with text (`<path>`). A path
//!   is the element names from the root, joined by `/`; an element with an `idx` or `index`
//!   attribute is written `name[value]`; an element with a `name` attribute is written by that
//!   name (Grandstream `<item name="...">`).
//!
//! A check fact `k = v` holds when some fact's key ends with `k` (at a `/`, `@` or the start)
//! and its value equals `v`.

use quick_xml::events::Event;
use quick_xml::Reader;

/// Facts of a file, in document order.
pub(crate) type Facts = Vec<(String, String)>;

/// Well-formedness of XML, with the 1-based line and column of the first error.
pub(crate) fn check_xml(text: &str) -> Result<(), (usize, usize, String)> {
    let mut r = Reader::from_str(text);
    r.config_mut().check_end_names = true;
    let mut depth = 0i64;
    let mut roots = 0;
    loop {
        let pos = r.buffer_position() as usize;
        match r.read_event() {
            Ok(Event::Start(_)) => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
            }
            Ok(Event::Empty(_)) => {
                if depth == 0 {
                    roots += 1;
                }
            }
            Ok(Event::End(_)) => depth -= 1,
            // XML forbids "--" inside a comment (phones' parsers may stop there); quick-xml
            // does not check it.
            Ok(Event::Comment(c)) if c.as_ref().contains("--") || c.as_ref().ends_with('-') => {
                let (l, col) = line_col(text, pos);
                return Err((
                    l,
                    col,
                    "\"--\" inside an XML comment (keep values out of comments)".into(),
                ));
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => {
                let (l, c) = line_col(text, pos);
                return Err((l, c, e.to_string()));
            }
        }
    }
    if depth != 0 {
        let (l, c) = line_col(text, text.len());
        return Err((l, c, "unclosed element at end of document".into()));
    }
    if roots != 1 {
        return Err((
            1,
            1,
            format!("an XML document has one root element, found {roots}"),
        ));
    }
    Ok(())
}

fn line_col(text: &str, byte: usize) -> (usize, usize) {
    let before = &text[..byte.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// Facts of an XML file.
fn flatten_xml(text: &str) -> Result<Facts, String> {
    let mut r = Reader::from_str(text);
    r.config_mut().check_end_names = true;
    let mut path: Vec<String> = Vec::new();
    let mut out = Facts::new();
    let mut text_buf = String::new();
    loop {
        match r.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                let seg = segment(&e)?;
                path.push(seg);
                attrs(&e, &path, &mut out)?;
                text_buf.clear();
            }
            Event::Empty(e) => {
                let seg = segment(&e)?;
                path.push(seg);
                attrs(&e, &path, &mut out)?;
                path.pop();
            }
            Event::Text(t) => {
                let s = quick_xml::escape::unescape(t.as_ref()).map_err(|e| e.to_string())?;
                text_buf.push_str(&s);
            }
            Event::GeneralRef(r) => {
                let entity = format!("&{};", r.as_ref());
                let s = quick_xml::escape::unescape(&entity).map_err(|e| e.to_string())?;
                text_buf.push_str(&s);
            }
            Event::CData(t) => text_buf.push_str(t.as_ref()),
            Event::End(_) => {
                let value = text_buf.trim();
                if !value.is_empty() {
                    out.push((path.join("/"), value.to_string()));
                }
                text_buf.clear();
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

fn segment(e: &quick_xml::events::BytesStart) -> Result<String, String> {
    let name = e.name().as_ref().to_string();
    let mut seg = name.clone();
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let key = a.key.as_ref().to_string();
        let v = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| e.to_string())?
            .to_string();
        match key.as_str() {
            "name" => seg = v,
            "idx" | "index" => seg = format!("{name}[{v}]"),
            _ => {}
        }
    }
    Ok(seg)
}

fn attrs(
    e: &quick_xml::events::BytesStart,
    path: &[String],
    out: &mut Facts,
) -> Result<(), String> {
    let p = path.join("/");
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let key = a.key.as_ref().to_string();
        let v = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| e.to_string())?
            .to_string();
        out.push((format!("{p}@{key}"), v));
    }
    Ok(())
}

/// Facts of a `key = value` / `key: value` file.
fn flatten_kv(text: &str) -> Facts {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('#') && !l.starts_with('!') && !l.starts_with('[')
        })
        .filter_map(|l| {
            let i = l.find(['=', ':'])?;
            Some((l[..i].trim().to_string(), l[i + 1..].trim().to_string()))
        })
        .collect()
}

/// Facts of a rendered file by its content type.
pub(crate) fn flatten(content_type: &str, text: &str) -> Result<Facts, String> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    if ct.ends_with("/xml") || ct.ends_with("+xml") {
        flatten_xml(text)
    } else {
        Ok(flatten_kv(text))
    }
}

/// Whether `fact` (`key = value`) holds in `facts`.
pub(crate) fn holds(facts: &Facts, fact: &str) -> bool {
    let Some((k, v)) = fact.split_once('=') else {
        return false;
    };
    let (k, v) = (k.trim(), v.trim());
    facts.iter().any(|(fk, fv)| {
        fv == v
            && fk.ends_with(k)
            && matches!(
                fk[..fk.len() - k.len()].chars().last(),
                None | Some('/') | Some('@')
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_facts_cover_attributes_text_idx_and_name_items() {
        let f = flatten_xml(
            r#"<?xml version="1.0"?><root a="1"><polycomConfig reg.2.type="shared"/><item name="account.2.sip.specialFeature">Broadsoft</item><fkey idx="3" context="2">line</fkey><sip><line index="2"><EnableSCA>1</EnableSCA></line></sip><x>A &amp; B</x></root>"#,
        )
        .unwrap();
        assert!(holds(&f, "reg.2.type = shared"));
        assert!(holds(&f, "account.2.sip.specialFeature = Broadsoft"));
        assert!(holds(&f, "fkey[3] = line"));
        assert!(holds(&f, "fkey[3]@context = 2"));
        assert!(holds(&f, "line[2]/EnableSCA = 1"));
        assert!(holds(&f, "x = A & B"));
        assert!(!holds(&f, "reg.2.type = private"));
        assert!(
            !holds(&f, "g.2.type = shared"),
            "keys match at a boundary only"
        );
    }

    #[test]
    fn kv_facts() {
        let f = flatten_kv("#!version:1.0.0.1\naccount.2.shared_line = 1\n\nsip line2 mode: 1\n");
        assert!(holds(&f, "account.2.shared_line = 1"));
        assert!(holds(&f, "sip line2 mode = 1"));
    }

    #[test]
    fn xml_errors_carry_line_and_column() {
        assert!(check_xml("<a><b/></a>").is_ok());
        let (l, _, _) = check_xml("<a>\n<b>\n</a>").unwrap_err();
        assert_eq!(l, 3);
        assert!(check_xml("<a></a><b></b>").is_err());
        assert!(check_xml("<a><!-- ok - fine --></a>").is_ok());
        assert!(check_xml("<a><!-- name a--b --></a>").is_err());
        assert!(check_xml("<a>").is_err());
    }
}
