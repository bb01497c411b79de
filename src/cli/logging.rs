//! The server's log output: one line per event, as text or as JSON (`--log-format json`), with
//! every character that could forge or hide a line escaped.
//!
//! Logged values come from requests (a hook's `subject` and `client_id`, rule names and
//! messages, error texts): a CR or LF in one would start a forged line, an ESC would drive the
//! terminal. Rather than trusting every `tracing::info!` call site to escape its fields, the
//! escaping is done once, where the formatted line is written ([`Escaping`]): every C0 control
//! character except the line's own final newline, DEL, the C1 controls, the Unicode line and
//! paragraph separators and the bidirectional overrides (which can make a line read as another).
//! The text format runs without ANSI colours, so the formatter itself never writes an ESC.
//!
//! The JSON format writes one object per line: `timestamp` (RFC 3339, UTC), `level`, `target`,
//! `fields` (the event's, `message` included) and `spans` (outermost first, each its `name` and
//! fields), like tracing-subscriber's JSON layer. serde_json already escapes control characters;
//! [`Escaping`] in JSON mode escapes the rest as `\uXXXX`, so each line stays valid JSON.

use std::fmt;
use std::io;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Errors of setting up logging.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// tracing's human-readable format, without colours.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (text | json)")),
        }
    }
}

/// Installs the global subscriber writing to stderr in `format`, filtered by `RUST_LOG`
/// (default `info`).
pub fn init(format: LogFormat) -> Result<(), LoggingError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let result = match format {
        LogFormat::Text => builder
            .with_writer(Escaping::new(io::stderr, false))
            .try_init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields)
            .event_format(JsonFormat)
            .with_writer(Escaping::new(io::stderr, true))
            .try_init(),
    };
    result.map_err(|e| LoggingError::Install(e.to_string()))
}

/// Whether `c` must not reach a log line raw.
fn dangerous(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Appends `text` to `out` with every dangerous character escaped: as `\uXXXX` in JSON mode,
/// else as `\n`, `\r`, `\t`, `\x1b` (below U+0100) or `\u{2028}`.
pub fn escape_into(out: &mut String, text: &str, json: bool) {
    for c in text.chars() {
        if !dangerous(c) {
            out.push(c);
            continue;
        }
        let n = u32::from(c);
        let esc = match (json, c) {
            (true, _) => format!("\\u{n:04x}"),
            (false, '\n') => "\\n".to_owned(),
            (false, '\r') => "\\r".to_owned(),
            (false, '\t') => "\\t".to_owned(),
            (false, _) if n < 0x100 => format!("\\x{n:02x}"),
            (false, _) => format!("\\u{{{n:04x}}}"),
        };
        out.push_str(&esc);
    }
}

/// A [`MakeWriter`] whose writers escape dangerous characters in what they are given (see the
/// module documentation). tracing-subscriber hands each formatted event over in one write, so
/// only the event's final newline is kept raw.
#[derive(Debug, Clone)]
pub struct Escaping<M> {
    inner: M,
    json: bool,
}

impl<M> Escaping<M> {
    /// Wraps `inner`; `json` selects JSON-safe escapes.
    pub fn new(inner: M, json: bool) -> Escaping<M> {
        Escaping { inner, json }
    }
}

/// The writer of [`Escaping`].
#[derive(Debug)]
pub struct EscapingWriter<W> {
    inner: W,
    json: bool,
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Escaping<M> {
    type Writer = EscapingWriter<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter {
            inner: self.inner.make_writer(),
            json: self.json,
        }
    }
}

impl<W: io::Write> io::Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (body, newline) = match buf.strip_suffix(b"\n") {
            Some(b) => (b, true),
            None => (buf, false),
        };
        let mut out = String::with_capacity(buf.len() + 16);
        for chunk in body.utf8_chunks() {
            escape_into(&mut out, chunk.valid(), self.json);
            for b in chunk.invalid() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
        if newline {
            out.push('\n');
        }
        self.inner.write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Collects fields as JSON values (numbers and booleans as such, everything else as text).
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_string()));
    }
}

/// Span fields stored as a JSON object's text (read back by [`JsonFormat`]).
pub struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut map = Map::new();
        fields.record(&mut JsonVisitor(&mut map));
        writer.write_str(&Value::Object(map).to_string())
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut map = match serde_json::from_str::<Value>(&current.fields) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        fields.record(&mut JsonVisitor(&mut map));
        current.fields = Value::Object(map).to_string();
        Ok(())
    }
}

/// One JSON object per event.
pub struct JsonFormat;

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let mut obj = Map::new();
                obj.insert("name".into(), Value::from(span.name()));
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&f.fields) {
                        obj.extend(m);
                    }
                }
                spans.push(Value::Object(obj));
            }
        }
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::from(rfc3339_now()));
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("target".into(), Value::from(meta.target()));
        line.insert("fields".into(), Value::Object(fields));
        if !spans.is_empty() {
            line.insert("spans".into(), Value::Array(spans));
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// The current UTC time as RFC 3339 with milliseconds (`2025-01-31T12:00:00.123Z`).
fn rfc3339_now() -> String {
    let millis = claimrules::model::time::unix_now_millis();
    let secs = millis.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm, proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        millis.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn escaped(input: &str, json: bool) -> String {
        let mut out = Vec::new();
        EscapingWriter {
            inner: &mut out,
            json,
        }
        .write_all(input.as_bytes())
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn only_the_final_newline_stays_raw() {
        let line = "INFO subject=a\r\nERROR forged \x1b[2J\u{7f}\u{85}\u{2028}\u{202e}x\n";
        let out = escaped(line, false);
        assert_eq!(out.matches('\n').count(), 1);
        assert!(out.ends_with('\n'));
        assert!(!out.chars().any(|c| c != '\n' && dangerous(c)), "{out:?}");
        assert!(out.contains("a\\r\\nERROR forged \\x1b[2J\\x7f\\x85\\u{2028}\\u{202e}x"));
        assert_eq!(escaped("plain text é ✓\n", false), "plain text é ✓\n");
    }

    #[test]
    fn json_lines_stay_valid_json() {
        let v = serde_json::json!({"fields": {"subject": "a\u{2028}b\u{202e}"}});
        let out = escaped(&format!("{v}\n"), true);
        let back: Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(back, v);
        assert!(!out.contains('\u{2028}'));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        assert!(t.as_str() > "2024-01-01", "{t}");
    }
}
