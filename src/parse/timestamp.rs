//! Log timestamps to the backend's ISO 8601 UTC text.
//!
//! The middleware sends `datetime.now(timezone.utc).isoformat()`:
//! `2026-11-25T10:04:05+00:00`, with `.ffffff` only when the microseconds are
//! not zero. The agent sends the time written in the log line instead, in the
//! same shape. Log lines of one second share their timestamp text, so the
//! last conversion is remembered and reused.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};

/// How a pattern's timestamp field is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampFormat {
    /// A `strftime`-style format, as chrono reads it (`%d/%b/%Y:%H:%M:%S %z`).
    /// Without a `%z`/`%:z`, the time is taken as UTC.
    Strftime(String),
    /// A `strftime`-style format whose zone-less times are the local time
    /// of the agent's zone (`TZ`, else /etc/localtime), as daphne and uWSGI
    /// write the server's local time without saying its zone.
    StrftimeLocal(String),
    /// RFC 3339 / ISO 8601 with an offset (nginx `$time_iso8601`).
    Iso8601,
    /// Seconds since the epoch, with an optional fraction (`1764065045.123`).
    UnixSeconds,
    /// Milliseconds since the epoch.
    UnixMillis,
    /// For generic JSON logs: a number is seconds since the epoch (or
    /// milliseconds, when it is too large to be seconds); text is RFC 3339.
    Auto,
}

impl TimestampFormat {
    /// Reads the pattern-file spelling: `iso8601`, `unix`, `unix_ms`, or a
    /// strftime format (anything containing `%`).
    pub fn from_spec(spec: &str) -> Result<Self, String> {
        match spec {
            "iso8601" | "rfc3339" => Ok(TimestampFormat::Iso8601),
            "unix" => Ok(TimestampFormat::UnixSeconds),
            "unix_ms" => Ok(TimestampFormat::UnixMillis),
            "auto" => Ok(TimestampFormat::Auto),
            s if s.contains('%') => Ok(TimestampFormat::Strftime(s.to_owned())),
            other => Err(format!(
                "unknown timestamp format {other:?}: expected \"auto\", \"iso8601\", \"unix\", \"unix_ms\" or a strftime format such as \"%d/%b/%Y:%H:%M:%S %z\""
            )),
        }
    }

    /// The same format with zone-less times read as the local time.
    pub(crate) fn in_local_zone(self) -> Self {
        match self {
            TimestampFormat::Strftime(f) => TimestampFormat::StrftimeLocal(f),
            other => other,
        }
    }

    /// Parses `text` to a UTC instant.
    pub fn parse(&self, text: &str) -> Result<DateTime<Utc>, String> {
        let text = text.trim();
        let parsed = match self {
            TimestampFormat::Strftime(fmt) | TimestampFormat::StrftimeLocal(fmt) => {
                match DateTime::parse_from_str(text, fmt) {
                    Ok(t) => Ok(t.with_timezone(&Utc)),
                    Err(with_zone) => match NaiveDateTime::parse_from_str(text, fmt) {
                        Ok(naive) if matches!(self, TimestampFormat::Strftime(_)) => {
                            Ok(Utc.from_utc_datetime(&naive))
                        }
                        // In the hour a clock is set back, the first of the
                        // two readings (the server cannot tell them apart
                        // either).
                        Ok(naive) => chrono::Local
                            .from_local_datetime(&naive)
                            .earliest()
                            .map(|t| t.with_timezone(&Utc))
                            .ok_or_else(|| "a time the local zone skips".to_owned()),
                        Err(_) => Err(with_zone.to_string()),
                    },
                }
            }
            TimestampFormat::Iso8601 => DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| e.to_string()),
            TimestampFormat::UnixSeconds => text
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite())
                .and_then(|s| {
                    let micros = (s * 1e6).round() as i64;
                    DateTime::from_timestamp_micros(micros)
                })
                .ok_or_else(|| "not a number of seconds since the epoch".to_owned()),
            TimestampFormat::UnixMillis => text
                .parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_millis)
                .ok_or_else(|| "not a number of milliseconds since the epoch".to_owned()),
            TimestampFormat::Auto => match text.parse::<f64>() {
                Ok(n) if n.abs() >= 1e11 => {
                    TimestampFormat::UnixMillis.parse(&format!("{}", n as i64))
                }
                Ok(_) => TimestampFormat::UnixSeconds.parse(text),
                Err(_) => TimestampFormat::Iso8601.parse(text),
            },
        };
        parsed.map_err(|e| format!("timestamp {text:?} does not parse: {e}"))
    }
}

/// Python's `isoformat()` of an aware UTC datetime.
pub fn isoformat(t: &DateTime<Utc>) -> String {
    let mut s = if t.timestamp_subsec_micros() == 0 {
        t.to_rfc3339_opts(SecondsFormat::Secs, false)
    } else {
        t.to_rfc3339_opts(SecondsFormat::Micros, false)
    };
    // chrono writes `+00:00` with use_z = false; keep the assertion cheap.
    debug_assert!(s.ends_with("+00:00"));
    s.shrink_to_fit();
    s
}

/// Converts timestamp text to the event's text, remembering the last one.
#[derive(Debug)]
pub struct TimestampConverter {
    format: TimestampFormat,
    last_input: String,
    last_output: String,
}

impl TimestampConverter {
    pub fn new(format: TimestampFormat) -> Self {
        TimestampConverter {
            format,
            last_input: String::new(),
            last_output: String::new(),
        }
    }

    /// The ISO 8601 UTC text for `text`.
    pub fn convert(&mut self, text: &str) -> Result<&str, String> {
        if self.last_output.is_empty() || self.last_input != text {
            let t = self.format.parse(text)?;
            self.last_output = isoformat(&t);
            self.last_input.clear();
            self.last_input.push_str(text);
        }
        Ok(&self.last_output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_log_time_becomes_utc() {
        let f = TimestampFormat::from_spec("%d/%b/%Y:%H:%M:%S %z").unwrap();
        let t = f.parse("25/Nov/2026:11:04:05 +0100").unwrap();
        assert_eq!(isoformat(&t), "2026-11-25T10:04:05+00:00");
    }

    #[test]
    fn fractions_appear_only_when_not_zero() {
        let f = TimestampFormat::UnixSeconds;
        assert_eq!(
            isoformat(&f.parse("1764065045.5").unwrap()),
            "2025-11-25T10:04:05.500000+00:00"
        );
        let iso = TimestampFormat::Iso8601;
        assert_eq!(
            isoformat(&iso.parse("2026-11-25T12:04:05+02:00").unwrap()),
            "2026-11-25T10:04:05+00:00"
        );
    }

    #[test]
    fn uwsgi_and_daphne_local_times_parse() {
        // The test process's zone is whatever the machine has: compare with
        // chrono's own reading of the same wall-clock time.
        let wall =
            NaiveDateTime::parse_from_str("2026-12-06 08:29:53", "%Y-%m-%d %H:%M:%S").unwrap();
        let want = chrono::Local
            .from_local_datetime(&wall)
            .earliest()
            .unwrap()
            .with_timezone(&Utc);
        let uwsgi = TimestampFormat::from_spec("%a %b %e %H:%M:%S %Y")
            .unwrap()
            .in_local_zone();
        assert_eq!(uwsgi.parse("Sun Dec  6 08:29:53 2026").unwrap(), want);
        let daphne = TimestampFormat::from_spec("%d/%b/%Y:%H:%M:%S")
            .unwrap()
            .in_local_zone();
        assert_eq!(daphne.parse("06/Dec/2026:08:29:53").unwrap(), want);
        // A zone written in the line wins over the local one.
        let hypercorn = TimestampFormat::from_spec("%d/%b/%Y:%H:%M:%S %z")
            .unwrap()
            .in_local_zone();
        assert_eq!(
            isoformat(&hypercorn.parse("06/Dec/2026:09:29:53 +0100").unwrap()),
            "2026-12-06T08:29:53+00:00"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let f = TimestampFormat::from_spec("%d/%b/%Y:%H:%M:%S %z").unwrap();
        assert!(f.parse("32/Foo/2026:99:00:00 +0000").is_err());
        assert!(TimestampFormat::UnixSeconds.parse("NaN").is_err());
        assert!(TimestampFormat::UnixSeconds.parse("1e300").is_err());
    }
}
