//! JSON bodies parsed strictly: a key twice in one object is an error, at any depth.
//!
//! serde_json keeps the last of duplicate keys, so `{"group": "A", "group": "B"}` means whatever
//! the last parser in a chain thinks it means. The admin API refuses such a body with the path
//! of the key. Parsing builds the same [`Value`] serde_json would, through a visitor that sees
//! each key as it is inserted (one map insert per key, as before), and keeps serde_json's
//! recursion limit.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body was refused.
#[derive(Debug)]
pub(crate) enum StrictError {
    /// Not JSON at all (serde_json's message, with line and column).
    Syntax(String),
    /// A key appears twice in one object: the key's path (`members[1].extension`).
    Duplicate(String),
}

/// Parses `bytes` as one JSON value, refusing duplicate keys.
pub(crate) fn parse(bytes: &[u8]) -> Result<Value, StrictError> {
    let mut found: Option<String> = None;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Strict {
        at: &Path::Root,
        found: &mut found,
    };
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (parsed, found) {
        (_, Some(path)) => Err(StrictError::Duplicate(path)),
        (Ok(v), None) => Ok(v),
        (Err(e), None) => Err(StrictError::Syntax(e.to_string())),
    }
}

/// Where a value is, built on the stack: nothing is allocated unless a duplicate is found.
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, k) => f.write_str(k),
            Path::Key(p, k) => write!(f, "{p}.{k}"),
            Path::Index(p, i) => write!(f, "{p}[{i}]"),
        }
    }
}

struct Strict<'a, 'f> {
    at: &'a Path<'a>,
    /// Set to the duplicate's path; the error serde returns only stops the parse.
    found: &'f mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for Strict<'_, '_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }
    /// A number with no fractional part (`3.0`, `1e2`) is an integer in JSON Schema, so the
    /// API takes it wherever it takes an integer: it is built as one.
    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        const LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53: every integer below is exact
        if n.fract() == 0.0 && n.abs() < LIMIT {
            return Ok(Value::Number((n as i64).into()));
        }
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        loop {
            let at = Path::Index(self.at, out.len());
            let seed = Strict {
                at: &at,
                found: &mut *self.found,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let at = Path::Key(self.at, &k);
            let seed = Strict {
                at: &at,
                found: &mut *self.found,
            };
            let v = map.next_value_seed(seed)?;
            if out.contains_key(&k) {
                *self.found = Some(Path::Key(self.at, &k).to_string());
                return Err(de::Error::custom("duplicate key"));
            }
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// A parsed body bound to a type strictly: a struct only from a JSON object. (serde's derive
/// also builds a struct from an array of its fields in order — `[]` or `[true]` for
/// `{"reboot": ...}` — which no client means and the API documents as an error.) Everything
/// else binds as from a [`Value`].
pub(crate) struct Bind(pub(crate) Value);

fn unexpected(v: &Value) -> de::Unexpected<'_> {
    match v {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(_) => de::Unexpected::Other("a number"),
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

impl<'de> Deserializer<'de> for Bind {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(a) => v.visit_seq(BindSeq(a.into_iter())),
            Value::Object(m) => v.visit_map(BindMap {
                iter: m.into_iter(),
                value: None,
            }),
            other => other.deserialize_any(v),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            obj @ Value::Object(_) => Bind(obj).deserialize_any(v),
            other => Err(de::Error::invalid_type(
                unexpected(&other),
                &"a JSON object",
            )),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => v.visit_none(),
            other => v.visit_some(Bind(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, v)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

struct BindSeq(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for BindSeq {
    type Error = serde_json::Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0.next().map(|v| seed.deserialize(Bind(v))).transpose()
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct BindMap {
    iter: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for BindMap {
    type Error = serde_json::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(Value::String(k)).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        let v = self
            .value
            .take()
            .ok_or_else(|| <serde_json::Error as de::Error>::custom("a value without its key"))?;
        seed.deserialize(Bind(v))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dup(s: &str) -> String {
        match parse(s.as_bytes()) {
            Err(StrictError::Duplicate(p)) => p,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn builds_what_serde_json_builds() {
        let s = r#"{"a": [1, -2, 3.5, "x", null, true, {"b": {}}], "c": "é\n", "d": 18446744073709551615}"#;
        assert_eq!(
            parse(s.as_bytes()).unwrap(),
            serde_json::from_str::<Value>(s).unwrap()
        );
        assert_eq!(parse(b" 7 ").unwrap(), json!(7));
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        on: bool,
    }
    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        n: u16,
    }

    fn bind(v: Value) -> Result<Outer, serde_json::Error> {
        use serde::Deserialize;
        Outer::deserialize(Bind(v))
    }

    #[test]
    fn a_struct_binds_from_an_object_only_at_any_depth() {
        use serde::Deserialize;
        assert_eq!(
            bind(json!({"inner": {"on": true}, "list": [{"on": true}, {}], "n": 7})).unwrap(),
            Outer {
                inner: Some(Inner { on: true }),
                list: vec![Inner { on: true }, Inner { on: false }],
                n: 7
            }
        );
        assert_eq!(bind(json!({"inner": null})).unwrap().inner, None);
        // serde_json alone takes these; the API refuses them.
        assert!(serde_json::from_value::<Outer>(json!([])).is_ok());
        assert!(bind(json!([])).is_err());
        assert!(bind(json!({"inner": [true]})).is_err());
        assert!(bind(json!({"list": [[true]]})).is_err());
        // Everything else is as before: unknown fields, types and ranges.
        assert!(bind(json!({"x": 1})).is_err());
        assert!(bind(json!({"n": 70000})).is_err());
        assert!(bind(json!({"n": "7"})).is_err());
        assert!(Vec::<Inner>::deserialize(Bind(json!([{"on": true}]))).is_ok());
    }

    #[test]
    fn a_number_without_a_fraction_is_an_integer() {
        assert_eq!(parse(b"0.0").unwrap(), json!(0));
        assert_eq!(parse(b"-3.0").unwrap(), json!(-3));
        assert_eq!(parse(b"1e2").unwrap(), json!(100));
        assert!(parse(b"0.0").unwrap().is_u64());
        assert_eq!(parse(b"2.5").unwrap(), json!(2.5));
        assert!(parse(b"1e300").unwrap().is_f64());
    }

    #[test]
    fn a_key_twice_is_refused_with_its_path_at_any_depth() {
        assert_eq!(dup(r#"{"mac": "a", "mac": "b"}"#), "mac");
        assert_eq!(dup(r#"{"sip": {"port": 1, "port": 2}}"#), "sip.port");
        assert_eq!(
            dup(r#"{"members": [{"extension": "1"}, {"extension": "2", "extension": "3"}]}"#),
            "members[1].extension"
        );
        assert_eq!(dup(r#"[{"a": 1, "a": 1}]"#), "[0].a");
        // The same key in sibling objects is fine.
        assert!(parse(br#"[{"a": 1}, {"a": 2}]"#).is_ok());
    }

    #[test]
    fn syntax_errors_and_trailing_bytes_are_syntax_errors() {
        assert!(matches!(parse(b"{"), Err(StrictError::Syntax(_))));
        assert!(matches!(parse(b"{} x"), Err(StrictError::Syntax(_))));
        // serde_json's recursion limit still holds.
        let deep = "[".repeat(10_000);
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(StrictError::Syntax(_))
        ));
    }
}
