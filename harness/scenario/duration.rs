//! Durations as scenario authors write them: `90s`, `15m`, `1h30m`, `500ms`.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// What a duration must look like, quoted in errors and in the JSON Schema.
pub const DURATION_HELP: &str =
    "a duration such as 90s, 15m, 1h30m or 500ms (units: h, m, s, ms; largest first)";

/// The JSON Schema pattern for a duration.
pub const DURATION_PATTERN: &str = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$";

/// A duration in a scenario file. Serialises back to the same short form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScenarioDuration(pub Duration);

/// Parse `90s`, `15m`, `1h30m`, `500ms`. Each unit at most once, largest first, and the
/// total must be above zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: expected {DURATION_HELP}");
    let s = text.trim();
    if s.is_empty() {
        return Err(bad());
    }
    const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];
    let mut rest = s;
    let mut total_ms: u64 = 0;
    let mut last_rank: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let letters = rest.chars().take_while(char::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let rank = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(bad)?;
        if last_rank.is_some_and(|r| r >= rank) {
            return Err(bad());
        }
        last_rank = Some(rank);
        total_ms = number
            .checked_mul(UNITS[rank].1)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(bad)?;
    }
    if total_ms == 0 {
        return Err(format!(
            "invalid duration {text:?}: it must be longer than zero"
        ));
    }
    Ok(Duration::from_millis(total_ms))
}

/// The short form of a duration (`1h30m`, `90s` stays `1m30s`, `500ms`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

impl fmt::Display for ScenarioDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for ScenarioDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ScenarioDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(DURATION_HELP)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(ScenarioDuration).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: a bare number has no unit; expected {DURATION_HELP}"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: a bare number has no unit; expected {DURATION_HELP}"
                )))
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for ScenarioDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl JsonSchema for ScenarioDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": DURATION_HELP,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse_duration("1m30s250ms"),
            Ok(Duration::from_millis(90_250))
        );
    }

    #[test]
    fn rejects_bad_forms_with_the_expected_shape() {
        for bad in [
            "", "90", "s", "9x", "1.5s", "30s1m", "1m1m", "-5s", "5 s", "0s",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        assert!(parse_duration("9x").unwrap_err().contains("90s, 15m"));
    }

    #[test]
    fn formats_back_to_a_parseable_form() {
        for text in ["90s", "15m", "1h30m", "500ms", "2h", "1m1s1ms"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn schema_pattern_agrees_with_the_parser() {
        let re = regex::Regex::new(DURATION_PATTERN).unwrap();
        for good in ["90s", "1h30m", "500ms"] {
            assert!(re.is_match(good) && parse_duration(good).is_ok());
        }
        for bad in ["9x", "30s1m", "1.5s"] {
            assert!(!re.is_match(bad) && parse_duration(bad).is_err());
        }
    }
}
