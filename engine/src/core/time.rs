//! Virtual and real time share one representation: microseconds on the store's clock.
//!
//! `Time` is an instant, `Span` a length. Both are plain integers so that the core never reads a
//! clock: whoever calls the core says what time it is.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// An instant on the store's clock, in microseconds since its epoch.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct Time(pub u64);

/// A length of time in microseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Span(pub u64);

impl Time {
    pub const ZERO: Time = Time(0);
    pub const MAX: Time = Time(u64::MAX);

    /// As RFC 3339 in UTC, to the millisecond (`2026-12-04T15:49:32.691Z`), reading the time
    /// as µs since the Unix epoch (the store clock's and the API's unit).
    pub fn rfc3339(self) -> String {
        let secs = self.0 / 1_000_000;
        let ms = (self.0 % 1_000_000) / 1000;
        let (days, rest) = (secs / 86_400, secs % 86_400);
        // Howard Hinnant's civil_from_days.
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rest / 3600,
            rest % 3600 / 60,
            rest % 60
        )
    }

    pub fn plus(self, span: Span) -> Time {
        Time(self.0.saturating_add(span.0))
    }

    /// The span from `earlier` to `self`, zero when `earlier` is later.
    pub fn since(self, earlier: Time) -> Span {
        Span(self.0.saturating_sub(earlier.0))
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

impl Span {
    pub const ZERO: Span = Span(0);

    pub const fn from_micros(us: u64) -> Span {
        Span(us)
    }
    pub const fn from_millis(ms: u64) -> Span {
        Span(ms * 1_000)
    }
    pub const fn from_secs(s: u64) -> Span {
        Span(s * 1_000_000)
    }
    pub fn from_secs_f64(s: f64) -> Span {
        if s.is_finite() && s > 0.0 {
            Span((s * 1e6).round().min(u64::MAX as f64) as u64)
        } else {
            Span(0)
        }
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
    pub fn as_micros(self) -> u64 {
        self.0
    }
    pub fn saturating_mul(self, n: u64) -> Span {
        Span(self.0.saturating_mul(n))
    }
    pub fn plus(self, other: Span) -> Span {
        Span(self.0.saturating_add(other.0))
    }

    /// Parses "250ms", "30s", "5m", "2h", "1d", "1.5h", "100us" and "none"/"0" style zeroes.
    pub fn parse(text: &str) -> Result<Span, SpanError> {
        let text = text.trim();
        if text == "0" {
            return Ok(Span::ZERO);
        }
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| SpanError::MissingUnit(text.to_string()))?;
        let (number, unit) = text.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| SpanError::BadNumber(text.to_string()))?;
        let micros_per_unit = match unit {
            "us" => 1.0,
            "ms" => 1e3,
            "s" => 1e6,
            "m" | "min" => 60e6,
            "h" => 3600e6,
            "d" => 86_400e6,
            _ => return Err(SpanError::UnknownUnit(text.to_string())),
        };
        let micros = value * micros_per_unit;
        if !micros.is_finite() || micros > MAX_SPAN_MICROS {
            return Err(SpanError::TooLong(text.to_string()));
        }
        Ok(Span(micros.round() as u64))
    }
}

/// About 317 years: far beyond any knob, far below overflow when added to a `Time`.
const MAX_SPAN_MICROS: f64 = 1e16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpanError {
    #[error("duration {0:?} has no unit (use us, ms, s, m or min, h or d, e.g. \"30s\")")]
    MissingUnit(String),
    #[error("duration {0:?} does not start with a number")]
    BadNumber(String),
    #[error("duration {0:?} has an unknown unit (use us, ms, s, m or min, h or d)")]
    UnknownUnit(String),
    #[error("duration {0:?} is too long")]
    TooLong(String),
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0;
        if us == 0 {
            write!(f, "0s")
        } else if us.is_multiple_of(3_600_000_000) {
            write!(f, "{}h", us / 3_600_000_000)
        } else if us.is_multiple_of(60_000_000) {
            write!(f, "{}m", us / 60_000_000)
        } else if us.is_multiple_of(1_000_000) {
            write!(f, "{}s", us / 1_000_000)
        } else if us.is_multiple_of(1_000) {
            write!(f, "{}ms", us / 1_000)
        } else {
            write!(f, "{us}us")
        }
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        let text = String::deserialize(d)?;
        Span::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(Span::parse("500ms"), Ok(Span::from_millis(500)));
        assert_eq!(Span::parse("30s"), Ok(Span::from_secs(30)));
        assert_eq!(Span::parse("5m"), Ok(Span::from_secs(300)));
        assert_eq!(Span::parse("2h"), Ok(Span::from_secs(7200)));
        assert_eq!(Span::parse("1.5h"), Ok(Span::from_secs(5400)));
        assert_eq!(Span::parse("1d"), Ok(Span::from_secs(86_400)));
        assert_eq!(Span::parse("10us"), Ok(Span(10)));
        assert_eq!(Span::parse("0"), Ok(Span::ZERO));
    }

    #[test]
    fn refuses_bad_durations_with_the_text() {
        assert!(matches!(Span::parse("30"), Err(SpanError::MissingUnit(_))));
        assert!(matches!(Span::parse("3x"), Err(SpanError::UnknownUnit(_))));
        assert!(matches!(Span::parse("h"), Err(SpanError::BadNumber(_))));
        assert!(matches!(
            Span::parse("99999999999999h"),
            Err(SpanError::TooLong(_))
        ));
        let message = Span::parse("3x").unwrap_err().to_string();
        assert!(message.contains("3x"), "{message}");
        // The units the message names are the ones parse takes (scenarios/README.md too).
        assert!(message.contains("m or min"), "{message}");
        assert_eq!(Span::parse("5min"), Ok(Span::from_secs(300)));
    }

    #[test]
    fn display_round_trips() {
        for text in ["0s", "250ms", "30s", "5m", "2h", "7us"] {
            assert_eq!(Span::parse(text).unwrap().to_string(), text);
        }
    }
}
