//! The serde helpers for tailscaled's JSON, in one place: Go writes `null` for an empty slice or
//! map, the zero time for "never", and maps keyed by node key where the monitor wants the values.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

/// `null` as the type's default (Go's nil slice or map).
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The values of a JSON object (or `null`), in document order, without allocating its keys.
pub(crate) fn map_values<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Values<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Values<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object or null")
        }
        fn visit_unit<E>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(m.size_hint().unwrap_or(0));
            while let Some((serde::de::IgnoredAny, v)) = m.next_entry()? {
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Values(std::marker::PhantomData))
}

/// Parses Go's RFC 3339 times; the zero time (`0001-01-01T00:00:00Z`) and garbage mean "unknown".
pub fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    let t = crate::model::time::rfc3339(s?).ok()?;
    (t.timestamp() > 0).then_some(t)
}

/// A Go `time.Time` as [`parse_time`] reads it, straight from the document (no copy of the
/// string): `null`, the zero time and garbage are `None`.
pub(crate) fn go_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    crate::model::opt_time(d, |v| Ok(parse_time(Some(v))))
}

/// `Some(None)` for an explicit `null`, `None` (with `#[serde(default)]`) for an absent key.
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}
