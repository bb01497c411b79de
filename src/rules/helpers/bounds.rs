//! Results bounded by the engine's size limits: a writer that refuses past the string limit
//! before it allocates, and a count of array items, map entries and string bytes as rhai counts
//! them.

use std::fmt;
use std::io;

use rhai::{Dynamic, Engine, ImmutableString, Map, NativeCallContext};

use super::{fail, EvalAltResult, Res};

/// An engine limit as a bound (rhai's 0 means unlimited).
pub(super) fn bound(limit: usize) -> usize {
    if limit == 0 {
        usize::MAX
    } else {
        limit
    }
}

/// Refuses a string result of `len` bytes that the engine's string limit would not allow.
pub(super) fn fits(ctx: &NativeCallContext, name: &str, len: usize) -> Res<()> {
    let max = bound(ctx.engine().max_string_size());
    if len > max {
        return Err(fail(
            ctx,
            name,
            format!("the result would be {len} bytes, over the string limit of {max} bytes"),
        ));
    }
    Ok(())
}

/// The error for a result that outgrew the string limit while it was being written.
pub(super) fn too_long(ctx: &NativeCallContext, name: &str) -> Box<EvalAltResult> {
    let max = ctx.engine().max_string_size();
    fail(
        ctx,
        name,
        format!("the result is over the string limit of {max} bytes"),
    )
}

/// A write target that stops (with an error) once it would hold more than `max` bytes, so a
/// result over the string limit is refused before it is allocated. With `keep` false it only
/// counts.
pub(super) struct Capped {
    buf: Vec<u8>,
    pub(super) len: usize,
    max: usize,
    keep: bool,
    pub(super) over: bool,
}

impl Capped {
    pub(super) fn new(max: usize, keep: bool) -> Self {
        Capped {
            buf: Vec::new(),
            len: 0,
            max,
            keep,
            over: false,
        }
    }

    pub(super) fn push(&mut self, bytes: &[u8]) -> bool {
        match self.len.checked_add(bytes.len()) {
            Some(len) if len <= self.max => {
                self.len = len;
                if self.keep {
                    self.buf.extend_from_slice(bytes);
                }
                true
            }
            _ => {
                self.over = true;
                false
            }
        }
    }

    pub(super) fn into_string(self) -> Option<String> {
        String::from_utf8(self.buf).ok()
    }
}

impl io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.push(buf) {
            Ok(buf.len())
        } else {
            Err(io::Error::other("over the string limit"))
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.push(s.as_bytes()) {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

/// Sizes of a value under construction, counted the way rhai counts them (every array item and
/// map entry at any depth, every string byte), against the engine's limits.
pub(super) struct Budget {
    items: usize,
    entries: usize,
    bytes: usize,
    max_items: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl Budget {
    pub(super) fn of(engine: &Engine) -> Self {
        Budget {
            items: 0,
            entries: 0,
            bytes: 0,
            max_items: bound(engine.max_array_size()),
            max_entries: bound(engine.max_map_size()),
            max_bytes: bound(engine.max_string_size()),
        }
    }

    /// No limits: for values the engine passes in, not ones a rule builds.
    pub(super) fn unbounded() -> Self {
        Budget {
            items: 0,
            entries: 0,
            bytes: 0,
            max_items: usize::MAX,
            max_entries: usize::MAX,
            max_bytes: usize::MAX,
        }
    }

    pub(super) fn item(&mut self) -> Result<(), String> {
        self.items += 1;
        if self.items > self.max_items {
            return Err(format!(
                "the result has more than {} array items",
                self.max_items
            ));
        }
        Ok(())
    }

    pub(super) fn entry(&mut self) -> Result<(), String> {
        self.entries += 1;
        if self.entries > self.max_entries {
            return Err(format!(
                "the result has more than {} map entries",
                self.max_entries
            ));
        }
        Ok(())
    }

    fn bytes(&mut self, len: usize) -> Result<(), String> {
        self.bytes = self.bytes.saturating_add(len);
        if self.bytes > self.max_bytes {
            return Err(format!(
                "the result holds more than {} bytes of strings, the string limit",
                self.max_bytes
            ));
        }
        Ok(())
    }

    pub(super) fn string(&mut self, text: &str) -> Result<Dynamic, String> {
        self.bytes(text.len())?;
        Ok(Dynamic::from(text.to_owned()))
    }

    /// Counts a value built of strings, maps and scalars (what `parse_url` builds).
    pub(super) fn count(&mut self, value: &Dynamic) -> Result<(), String> {
        if let Some(text) = value.read_lock::<ImmutableString>() {
            return self.bytes(text.len());
        }
        if let Some(map) = value.read_lock::<Map>() {
            for item in map.values() {
                self.entry()?;
                self.count(item)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::SandboxLimits;
    use serde_json::json;

    use super::super::tests::{assert_errors_with, run_with, REP, X};

    #[test]
    fn results_are_bounded_by_the_string_limit() {
        let small = SandboxLimits {
            max_string_size: 100,
            max_array_size: 20,
            max_map_size: 8,
            ..Default::default()
        };
        // 90 bytes of input: fine as it is, too long once encoded.
        let s = "rep(\"x\", 90)";
        assert_errors_with(
            "base64_encode",
            &[&format!("base64_encode({s})")],
            small.clone(),
        );
        assert_errors_with(
            "base64url_encode",
            &[&format!("base64url_encode({s})")],
            small.clone(),
        );
        assert_errors_with(
            "url_encode",
            &[r#"rep("é", 20).url_encode()"#],
            small.clone(),
        );
        assert_errors_with("random_hex", &["random_hex(51)"], small.clone());
        assert_errors_with(
            "to_json",
            &["to_json(rep(\"x\", 99))", "to_json([rep(\"\\n\", 60)])"],
            small.clone(),
        );
        assert_errors_with(
            "join",
            &[
                r#"[rep("x", 50), rep("x", 49)].join("--")"#,
                r#"join([rep("x", 99), 10], "")"#,
            ],
            small.clone(),
        );
        assert_errors_with(
            "format_date",
            &[r#"format_date(0, "%c %c %c %c %c")"#],
            small.clone(),
        );
        assert_errors_with(
            "jwt_sign",
            &[&format!("jwt_sign(#{{ s: {s} }}, \"k\", \"HS256\")")],
            small.clone(),
        );
        // Array items and map entries count like rhai counts them, nested ones included. (The
        // strings of a result are never longer than the text they came from.)
        assert_errors_with(
            "parse_json",
            &[
                r#"parse_json("[" + rep("1,", 20) + "1]")"#,
                "parse_json(`[[1,2,3,4,5,6,7,8,9],[1,2,3,4,5,6,7,8,9,10,11]]`)",
                r#"parse_json(`{"a":{"b":1,"c":2,"d":3,"e":4},"f":{"g":1,"h":2,"i":3}}`)"#,
            ],
            small.clone(),
        );
        assert_errors_with(
            "parse_url",
            &["parse_url(`http://h/?a=1&b=2&c=3`)"],
            small.clone(),
        );
        // Just under the limits, the same helpers succeed.
        let ok = format!(
            "context.accessToken[\"{X}\"] = [base64_encode(rep(\"x\", 75)).len(), random_hex(50).len(),
             parse_json(`[{}1]`).len(), parse_url(`http://h/?a=1&b=2&a=3`).query.len()];{REP}",
            "1,".repeat(19)
        );
        let out = run_with(&ok, small.clone()).unwrap();
        assert_eq!(out.access_token[X], json!([100, 100, 20, 2]));
        // Unlimited (0) means no bound at all.
        let unlimited = SandboxLimits {
            max_string_size: 0,
            ..Default::default()
        };
        let big = format!(
            "let s = \"x\"; for i in 0..17 {{ s += s; }} context.accessToken[\"{X}\"] = base64_encode(s).len();"
        );
        let out = run_with(&big, unlimited).unwrap();
        assert_eq!(out.access_token[X], json!(174764));
    }
}
