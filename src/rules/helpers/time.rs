//! Dates: `parse_date` (RFC 3339 / ISO 8601 to unix seconds) and `format_date` (strftime).

use std::fmt;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use rhai::{Engine, NativeCallContext};

use super::bounds::{bound, too_long, Capped};
use super::{fail, quote, Res};

/// Parses RFC 3339 (and the common ISO 8601 forms around it) to unix seconds: an offset or `Z`,
/// optional fractional seconds (dropped), no offset meaning UTC, a date alone meaning midnight
/// UTC.
fn parse_date(text: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp());
    }
    // ISO 8601 offsets without the colon (`+0200`); `%z` also takes `+02:00`.
    if let Ok(t) = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.timestamp());
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc().timestamp());
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp())
}

/// Registers `parse_date` and `format_date`.
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn(
        "parse_date",
        |ctx: NativeCallContext, text: &str| -> Res<i64> {
            parse_date(text).ok_or_else(|| {
                fail(
                    &ctx,
                    "parse_date",
                    format!("{} is not an RFC 3339 / ISO 8601 date", quote(text)),
                )
            })
        },
    );
    engine.register_fn(
        "format_date",
        |ctx: NativeCallContext, seconds: i64, format: &str| -> Res<String> {
            use fmt::Write as _;
            let name = "format_date";
            let time = DateTime::<Utc>::from_timestamp(seconds, 0).ok_or_else(|| {
                fail(
                    &ctx,
                    name,
                    format!("{seconds} is out of the supported range"),
                )
            })?;
            let mut items = Vec::new();
            for item in StrftimeItems::new(format) {
                if item == Item::Error {
                    return Err(fail(
                        &ctx,
                        name,
                        format!("{} is not a valid strftime format", quote(format)),
                    ));
                }
                items.push(item);
            }
            let mut out = Capped::new(bound(ctx.engine().max_string_size()), true);
            if write!(out, "{}", time.format_with_items(items.iter())).is_err() {
                return Err(if out.over {
                    too_long(&ctx, name)
                } else {
                    fail(&ctx, name, format!("cannot format with {}", quote(format)))
                });
            }
            out.into_string()
                .ok_or_else(|| fail(&ctx, name, "the result is not UTF-8"))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_errors, eval};

    #[test]
    fn dates() {
        for text in [
            "2024-05-01T10:00:00Z",
            "2024-05-01T10:00:00z",
            "2024-05-01T12:00:00+02:00",
            "2024-05-01T12:00:00+0200",
            "2024-05-01T07:30:00-02:30",
            "2024-05-01T10:00:00.789Z",
            "2024-05-01T10:00:00.123456789+00:00",
            "2024-05-01T10:00:00",
            "2024-05-01T10:00:00.5",
        ] {
            assert_eq!(eval(&format!("parse_date({text:?})")), 1714557600, "{text}");
        }
        assert_eq!(eval(r#"parse_date("2024-05-01")"#), 1714521600);
        assert_eq!(eval(r#"parse_date("1969-12-31T23:59:59Z")"#), -1);
        assert_eq!(
            eval(r#"format_date(1714557600, "%Y-%m-%dT%H:%M:%SZ")"#),
            "2024-05-01T10:00:00Z"
        );
        assert_eq!(
            eval(r#"format_date(1714557600, "%A %-d %B %Y, %H:%M %Z (%s)")"#),
            "Wednesday 1 May 2024, 10:00 UTC (1714557600)"
        );
        assert_eq!(
            eval(r#"format_date(parse_date("2024-02-29T23:59:59+00:00"), "%F %T")"#),
            "2024-02-29 23:59:59"
        );
        assert_errors(
            "parse_date",
            &[
                r#"parse_date("yesterday")"#,
                r#"parse_date("2024-13-01")"#,
                r#"parse_date("2024-02-30T00:00:00Z")"#,
                r#"parse_date("2024-05-01T10:00:00Zjunk")"#,
                r#"parse_date("")"#,
            ],
        );
        assert_errors(
            "format_date",
            &[
                r#"format_date(0, "%Y-%")"#,
                r#"format_date(0, "%Q")"#,
                r#"format_date(0, "%.3")"#,
                "format_date(9223372036854775807, \"%Y\")",
            ],
        );
    }
}
