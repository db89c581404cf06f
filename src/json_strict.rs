//! JSON parsing that refuses duplicate object keys.
//!
//! `serde_json::Value` keeps the last of two equal keys; another parser (the IdP's, the MCP server's) may
//! keep the first. Anything the filter makes a security decision on must mean the same thing to every
//! parser, so tokens and request bodies are parsed with this instead. Keys are compared after unescaping,
//! so `"a"` and `"\u0061"` are the same key. Nesting depth is bounded by serde_json's recursion limit (128).
//!
//! [`Strict`] builds a `Value`; [`Checked`] applies the same checks to a part of a document without
//! building anything, for readers (the MCP body) that keep only the few fields a decision needs.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

/// Parses `bytes` as one JSON value; fails on invalid UTF-8, trailing data or a duplicate key at any depth.
pub fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Strict>(bytes).map(|v| v.0)
}

/// A JSON value, deserialized with duplicate keys refused at any depth.
pub struct Strict(pub Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

/// A JSON value checked as [`Strict`] checks it (duplicate keys at any depth), then dropped: nothing is
/// built, and keys without escapes are compared where they lie in the input.
pub struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

/// An object key, borrowed from the input unless it had escapes (then unescaped, so that `"a"` and
/// `"\u0061"` compare equal).
pub struct Key<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The keys of one object so far; refuses a second occurrence with the same error as [`parse`]. An MCP
/// message has a handful of keys: the first few are kept inline (no allocation per object), the rest in a
/// tree, so an object with many keys costs O(n log n), not O(n²).
#[derive(Default)]
pub struct KeySet<'de> {
    inline: [Option<Cow<'de, str>>; INLINE_KEYS],
    more: BTreeSet<Cow<'de, str>>,
}

const INLINE_KEYS: usize = 8;

impl<'de> KeySet<'de> {
    pub fn insert<E: de::Error>(&mut self, key: Cow<'de, str>) -> Result<(), E> {
        if self.inline.iter().flatten().any(|k| *k == key) || self.more.contains(&key) {
            return Err(duplicate(&key));
        }
        match self.inline.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(key),
            None => {
                self.more.insert(key);
            }
        }
        Ok(())
    }
}

/// As `Strict` does: a number that a `Value` cannot hold is an error, whether or not the value is kept.
pub fn check_f64<E: de::Error>(v: f64) -> Result<(), E> {
    Number::from_f64(v).map(|_| ()).ok_or_else(|| E::custom("number out of range"))
}

fn duplicate<E: de::Error>(key: &str) -> E {
    E::custom(format_args!("duplicate key \"{}\"", key.escape_debug()))
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v)))
    }
}

/// Defines a visitor's `expecting` and scalar methods so that every JSON scalar is accepted as `$value`,
/// with `check_f64`'s rule for numbers: for visitors that look only into objects (and arrays), here and in
/// `mcp::jsonrpc`. `expecting` is then never shown.
macro_rules! accept_scalars {
    ($value:expr) => {
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            $crate::json_strict::check_f64(v).map(|()| $value)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}
pub(crate) use accept_scalars;

/// Checks every element of an array, building nothing.
pub fn check_elements<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Checked>()?.is_some() {}
    Ok(())
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;
    accept_scalars!(Checked);

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Checked, A::Error> {
        check_elements(seq).map(|()| Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let mut keys = KeySet::default();
        while let Some(Key(key)) = map.next_key()? {
            keys.insert(key)?;
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(duplicate(&key));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ordinary_json() {
        let v = parse(br#"{"a":[1,2.5,"x",null,true],"b":{"c":-3}}"#).unwrap();
        assert_eq!(v["a"][2], "x");
        assert_eq!(v["b"]["c"], -3);
    }

    #[test]
    fn rejects_duplicate_keys_at_any_depth() {
        assert!(parse(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse(br#"{"x":{"y":[{"a":1,"a":1}]}}"#).is_err());
    }

    #[test]
    fn duplicate_detection_sees_through_escapes() {
        let err = parse(br#"{"method":"x","meth\u006fd":"y"}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate key"), "{err}");
    }

    #[test]
    fn checked_refuses_duplicates_among_many_keys() {
        let keys: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let check = |json: String| serde_json::from_str::<Checked>(&json).map(|_| ());
        assert!(check(format!("{{{}}}", keys.join(","))).is_ok());
        for dup in [0, 7, 8, 39] {
            let body = format!("{{{},\"k{dup}\":0}}", keys.join(","));
            let err = check(body).unwrap_err();
            assert!(err.to_string().contains(&format!("duplicate key \"k{dup}\"")), "{err}");
        }
        assert!(check(r#"{"a":1,"\u0061":2}"#.to_string()).is_err(), "keys compare unescaped");
    }

    #[test]
    fn rejects_trailing_data_and_bad_utf8() {
        assert!(parse(br#"{"a":1} x"#).is_err());
        assert!(parse(b"{\"a\":\"\xff\"}").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "[".repeat(100_000);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
