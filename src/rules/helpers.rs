//! Native helpers for rules (hashing, encodings, URLs, JSON, dates, ids, JWTs, CIDR ranges):
//! each costs one operation, where the same work written in Rhai would cost thousands.
//!
//! Every helper refuses bad input with [`helper_error`] (`"<helper>: <what is wrong>"`), which a
//! rule's `try`/`catch` can catch and which, uncaught, fails the run as a script error. Every
//! helper also bounds what it builds by the engine's size limits (strings, arrays, maps) and
//! refuses before it allocates more, instead of leaving the check to rhai after the fact.

use std::fmt;
use std::io;
use std::net::IpAddr;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{Config as _, DecodePaddingMode};
use base64::Engine as _;
use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, NativeCallContext};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::engine::helper_error;

type Res<T> = Result<T, Box<EvalAltResult>>;

/// Deepest nesting `to_json` writes and `jwt_sign` signs: serde_json's own parsing limit, so
/// whatever a helper writes, `parse_json` (and any serde_json verifier) reads back.
const MAX_JSON_DEPTH: usize = 128;

/// Most bytes `random_hex` draws.
const MAX_RANDOM_BYTES: i64 = 1024;

/// Standard base64 (RFC 4648 §4): padded output, padding optional on input.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// URL-safe base64 (RFC 4648 §5): unpadded output, padding optional on input.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The catchable error of helper `name`.
fn fail(ctx: &NativeCallContext, name: &str, what: impl fmt::Display) -> Box<EvalAltResult> {
    helper_error(ctx.call_position(), format!("{name}: {what}"))
}

/// An engine limit as a bound (rhai's 0 means unlimited).
fn bound(limit: usize) -> usize {
    if limit == 0 {
        usize::MAX
    } else {
        limit
    }
}

/// Refuses a string result of `len` bytes that the engine's string limit would not allow.
fn fits(ctx: &NativeCallContext, name: &str, len: usize) -> Res<()> {
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
fn too_long(ctx: &NativeCallContext, name: &str) -> Box<EvalAltResult> {
    let max = ctx.engine().max_string_size();
    fail(
        ctx,
        name,
        format!("the result is over the string limit of {max} bytes"),
    )
}

/// `text` for an error message: quoted, and cut short so a huge input makes a short message.
fn quote(text: &str) -> String {
    const SHOWN: usize = 60;
    match text.char_indices().nth(SHOWN) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
    }
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A write target that stops (with an error) once it would hold more than `max` bytes, so a
/// result over the string limit is refused before it is allocated. With `keep` false it only
/// counts.
struct Capped {
    buf: Vec<u8>,
    len: usize,
    max: usize,
    keep: bool,
    over: bool,
}

impl Capped {
    fn new(max: usize, keep: bool) -> Self {
        Capped {
            buf: Vec::new(),
            len: 0,
            max,
            keep,
            over: false,
        }
    }

    fn push(&mut self, bytes: &[u8]) -> bool {
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

    fn into_string(self) -> Option<String> {
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

/// A rhai value as JSON, for serde: unit, bool, int, float, string, char, and arrays and maps
/// of those, at most [`MAX_JSON_DEPTH`] levels deep; anything else fails naming its type.
struct Json<'a> {
    value: &'a Dynamic,
    engine: &'a Engine,
    depth: usize,
}

impl Json<'_> {
    fn nested<'b>(&'b self, value: &'b Dynamic) -> Json<'b> {
        Json {
            value,
            engine: self.engine,
            depth: self.depth + 1,
        }
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.value;
        if v.is_unit() {
            return s.serialize_unit();
        }
        if let Ok(b) = v.as_bool() {
            return s.serialize_bool(b);
        }
        if let Ok(n) = v.as_int() {
            return s.serialize_i64(n);
        }
        if let Ok(f) = v.as_float() {
            if !f.is_finite() {
                return Err(S::Error::custom(format!("{f} has no JSON form")));
            }
            return s.serialize_f64(f);
        }
        if let Ok(c) = v.as_char() {
            return s.serialize_char(c);
        }
        if let Some(text) = v.read_lock::<ImmutableString>() {
            return s.serialize_str(&text);
        }
        let nested = v.is_array() || v.is_map();
        if nested && self.depth >= MAX_JSON_DEPTH {
            return Err(S::Error::custom(format!(
                "the value nests deeper than {MAX_JSON_DEPTH} levels"
            )));
        }
        if let Some(items) = v.read_lock::<Array>() {
            let mut seq = s.serialize_seq(Some(items.len()))?;
            for item in items.iter() {
                seq.serialize_element(&self.nested(item))?;
            }
            return seq.end();
        }
        if let Some(map) = v.read_lock::<Map>() {
            let mut out = s.serialize_map(Some(map.len()))?;
            for (key, item) in map.iter() {
                out.serialize_entry(key.as_str(), &self.nested(item))?;
            }
            return out.end();
        }
        Err(S::Error::custom(format!(
            "a value of type `{}` has no JSON form",
            self.engine.map_type_name(v.type_name())
        )))
    }
}

/// Writes `value` as compact JSON into `out`; the error says what is wrong.
fn write_json(engine: &Engine, value: &Dynamic, out: &mut Capped) -> Result<(), String> {
    let json = Json {
        value,
        engine,
        depth: 0,
    };
    serde_json::to_writer(&mut *out, &json).map_err(|e| e.to_string())
}

/// Sizes of a value under construction, counted the way rhai counts them (every array item and
/// map entry at any depth, every string byte), against the engine's limits.
struct Budget {
    items: usize,
    entries: usize,
    bytes: usize,
    max_items: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl Budget {
    fn of(engine: &Engine) -> Self {
        Budget {
            items: 0,
            entries: 0,
            bytes: 0,
            max_items: bound(engine.max_array_size()),
            max_entries: bound(engine.max_map_size()),
            max_bytes: bound(engine.max_string_size()),
        }
    }

    fn item(&mut self) -> Result<(), String> {
        self.items += 1;
        if self.items > self.max_items {
            return Err(format!(
                "the result has more than {} array items",
                self.max_items
            ));
        }
        Ok(())
    }

    fn entry(&mut self) -> Result<(), String> {
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

    fn string(&mut self, text: &str) -> Result<Dynamic, String> {
        self.bytes(text.len())?;
        Ok(Dynamic::from(text.to_owned()))
    }

    /// Counts a value built of strings, maps and scalars (what `parse_url` builds).
    fn count(&mut self, value: &Dynamic) -> Result<(), String> {
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

/// A parsed JSON value as a rhai value: objects become maps, `null` becomes `()`, integers
/// outside `i64` become floats.
fn json_to_dynamic(value: &Value, budget: &mut Budget) -> Result<Dynamic, String> {
    Ok(match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => budget.string(s)?,
        Value::Array(items) => {
            let mut out = Array::with_capacity(items.len());
            for item in items {
                budget.item()?;
                out.push(json_to_dynamic(item, budget)?);
            }
            Dynamic::from_array(out)
        }
        Value::Object(entries) => {
            let mut out = Map::new();
            for (key, item) in entries {
                budget.entry()?;
                out.insert(key.as_str().into(), json_to_dynamic(item, budget)?);
            }
            Dynamic::from_map(out)
        }
    })
}

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

/// Whether `c` stays as it is in JavaScript's `encodeURIComponent`: the unreserved characters
/// of RFC 2396 §2.3, alphanumerics and the marks `-_.!~*'()`.
fn uri_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&c)
}

fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(encoded_url_len(text));
    for &b in text.as_bytes() {
        if uri_unreserved(b) {
            out.push(char::from(b));
        } else {
            const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
    }
    out
}

fn encoded_url_len(text: &str) -> usize {
    text.bytes()
        .map(|b| if uri_unreserved(b) { 1 } else { 3 })
        .sum()
}

/// Like `decodeURIComponent`: every `%XX` becomes its byte, nothing else changes (`+` stays),
/// and the bytes must be UTF-8. Because the literal characters around the escapes are whole
/// UTF-8 characters, checking the decoded bytes as a whole refuses exactly what JavaScript
/// refuses.
fn url_decode(text: &str) -> Result<String, String> {
    fn digit(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = bytes
                .get(i + 1)
                .and_then(|&h| digit(h))
                .zip(bytes.get(i + 2).and_then(|&l| digit(l)));
            let Some((hi, lo)) = pair else {
                return Err(format!(
                    "malformed escape at byte {i}: `%` must be followed by two hex digits"
                ));
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the escapes do not decode to UTF-8".to_owned())
}

/// An address or range as a 128-bit IPv6 value: IPv4 is taken as its IPv4-mapped IPv6 form
/// `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2), so one comparison covers both families.
fn as_v6(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Whether `ip` is in `cidr` (`addr/prefix`, or one address for just that address).
fn ip_in_range(ip: &str, cidr: &str) -> Result<bool, String> {
    let addr: IpAddr = ip
        .parse()
        .map_err(|_| format!("{} is not an IP address", quote(ip)))?;
    let (net, prefix) = cidr.split_once('/').unwrap_or((cidr, ""));
    let net: IpAddr = net
        .parse()
        .map_err(|_| format!("{} is not a CIDR range", quote(cidr)))?;
    let width: u32 = if net.is_ipv4() { 32 } else { 128 };
    let prefix: u32 = if cidr.contains('/') {
        // Digits only: `str::parse` would also take a leading `+`.
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{} is not a CIDR range", quote(cidr)));
        }
        prefix
            .parse()
            .ok()
            .filter(|p| *p <= width)
            .ok_or_else(|| format!("{}: the prefix length must be at most {width}", quote(cidr)))?
    } else {
        width
    };
    // The mapped IPv4 range sits under the 96-bit prefix `::ffff:0:0/96`.
    let prefix = prefix + (128 - width);
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    Ok(as_v6(addr) & mask == as_v6(net) & mask)
}

/// Builds the `parse_url` map.
fn parse_url(engine: &Engine, text: &str) -> Result<Dynamic, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{}: {e}", quote(text)))?;
    let text_or_unit = |s: Option<&str>| s.map_or(Dynamic::UNIT, |s| Dynamic::from(s.to_owned()));
    let mut query = Map::new();
    for (name, value) in url.query_pairs() {
        query.insert(name.as_ref().into(), Dynamic::from(value.into_owned()));
    }
    let port = url
        .port_or_known_default()
        .map_or(Dynamic::UNIT, |p| Dynamic::from_int(i64::from(p)));
    let mut out = Map::new();
    out.insert("scheme".into(), Dynamic::from(url.scheme().to_owned()));
    out.insert("host".into(), text_or_unit(url.host_str()));
    out.insert("port".into(), port);
    out.insert("path".into(), Dynamic::from(url.path().to_owned()));
    out.insert("query".into(), Dynamic::from_map(query));
    out.insert("fragment".into(), text_or_unit(url.fragment()));
    // What was built is bounded by the text (a few times its length at most); count it as rhai
    // would before handing it over.
    let mut budget = Budget::of(engine);
    for value in out.values() {
        budget.entry()?;
        budget.count(value)?;
    }
    Ok(Dynamic::from_map(out))
}

/// `join(array, separator)`: strings as they are, `()` as nothing, anything else as rhai
/// displays it; `None` when the result would pass `max` bytes.
fn join(items: &Array, sep: &str, max: usize) -> Option<String> {
    use fmt::Write as _;
    let mut out = Capped::new(max, true);
    for (i, item) in items.iter().enumerate() {
        if i > 0 && !out.push(sep.as_bytes()) {
            return None;
        }
        if let Some(text) = item.read_lock::<ImmutableString>() {
            if !out.push(text.as_bytes()) {
                return None;
            }
        } else if !item.is_unit() && write!(out, "{item}").is_err() {
            return None;
        }
    }
    out.into_string()
}

fn jwt_algorithm(alg: &str) -> Option<(jsonwebtoken::Algorithm, usize)> {
    use jsonwebtoken::Algorithm::{HS256, HS384, HS512};
    match alg {
        "HS256" => Some((HS256, 32)),
        "HS384" => Some((HS384, 48)),
        "HS512" => Some((HS512, 64)),
        _ => None,
    }
}

/// Registers every helper of this module on `engine`.
pub(crate) fn register(engine: &mut Engine) {
    register_digests(engine);
    register_encodings(engine);
    register_data(engine);
    register_misc(engine);
}

fn register_digests(engine: &mut Engine) {
    engine.register_fn(
        "sha256",
        |ctx: NativeCallContext, text: &str| -> Res<String> {
            fits(&ctx, "sha256", 64)?;
            Ok(hex(&Sha256::digest(text.as_bytes())))
        },
    );
    fn hmac(ctx: &NativeCallContext, name: &str, key: &str, text: &str) -> Res<Vec<u8>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
            .map_err(|e| fail(ctx, name, format!("invalid key: {e}")))?;
        mac.update(text.as_bytes());
        Ok(mac.finalize().into_bytes().to_vec())
    }
    engine.register_fn(
        "hmac_sha256",
        |ctx: NativeCallContext, key: &str, text: &str| -> Res<String> {
            fits(&ctx, "hmac_sha256", 64)?;
            Ok(hex(&hmac(&ctx, "hmac_sha256", key, text)?))
        },
    );
    engine.register_fn(
        "hmac_sha256_base64",
        |ctx: NativeCallContext, key: &str, text: &str| -> Res<String> {
            fits(&ctx, "hmac_sha256_base64", 44)?;
            Ok(B64.encode(hmac(&ctx, "hmac_sha256_base64", key, text)?))
        },
    );
}

fn register_encodings(engine: &mut Engine) {
    fn encode(
        ctx: &NativeCallContext,
        name: &str,
        b64: &GeneralPurpose,
        text: &str,
    ) -> Res<String> {
        let len =
            base64::encoded_len(text.len(), b64.config().encode_padding()).unwrap_or(usize::MAX);
        fits(ctx, name, len)?;
        Ok(b64.encode(text.as_bytes()))
    }
    fn decode(
        ctx: &NativeCallContext,
        name: &str,
        b64: &GeneralPurpose,
        text: &str,
    ) -> Res<String> {
        let bytes = b64.decode(text.as_bytes()).map_err(|e| {
            fail(
                ctx,
                name,
                format!("{} is not valid base64: {e}", quote(text)),
            )
        })?;
        fits(ctx, name, bytes.len())?;
        String::from_utf8(bytes).map_err(|_| fail(ctx, name, "the decoded bytes are not UTF-8"))
    }
    engine.register_fn(
        "base64_encode",
        |ctx: NativeCallContext, text: &str| -> Res<String> {
            encode(&ctx, "base64_encode", &B64, text)
        },
    );
    engine.register_fn(
        "base64_decode",
        |ctx: NativeCallContext, text: &str| -> Res<String> {
            decode(&ctx, "base64_decode", &B64, text)
        },
    );
    engine.register_fn(
        "base64url_encode",
        |ctx: NativeCallContext, text: &str| -> Res<String> {
            encode(&ctx, "base64url_encode", &B64URL, text)
        },
    );
    engine.register_fn(
        "base64url_decode",
        |ctx: NativeCallContext, text: &str| -> Res<String> {
            decode(&ctx, "base64url_decode", &B64URL, text)
        },
    );
    engine.register_fn(
        "url_encode",
        |ctx: NativeCallContext, text: &str| -> Res<String> {
            fits(&ctx, "url_encode", encoded_url_len(text))?;
            Ok(url_encode(text))
        },
    );
    engine.register_fn(
        "url_decode",
        |ctx: NativeCallContext, text: &str| -> Res<String> {
            let out = url_decode(text).map_err(|e| fail(&ctx, "url_decode", e))?;
            fits(&ctx, "url_decode", out.len())?;
            Ok(out)
        },
    );
}

fn register_data(engine: &mut Engine) {
    engine.register_fn(
        "parse_url",
        |ctx: NativeCallContext, text: &str| -> Res<Dynamic> {
            parse_url(ctx.engine(), text).map_err(|e| fail(&ctx, "parse_url", e))
        },
    );
    engine.register_fn(
        "parse_json",
        |ctx: NativeCallContext, text: &str| -> Res<Dynamic> {
            let value: Value = serde_json::from_str(text)
                .map_err(|e| fail(&ctx, "parse_json", format!("invalid JSON: {e}")))?;
            json_to_dynamic(&value, &mut Budget::of(ctx.engine()))
                .map_err(|e| fail(&ctx, "parse_json", e))
        },
    );
    fn to_json(ctx: &NativeCallContext, value: &Dynamic) -> Res<String> {
        let mut out = Capped::new(bound(ctx.engine().max_string_size()), true);
        if let Err(e) = write_json(ctx.engine(), value, &mut out) {
            return Err(if out.over {
                too_long(ctx, "to_json")
            } else {
                fail(ctx, "to_json", e)
            });
        }
        out.into_string()
            .ok_or_else(|| fail(ctx, "to_json", "the result is not UTF-8"))
    }
    engine.register_fn(
        "to_json",
        |ctx: NativeCallContext, value: Dynamic| -> Res<String> { to_json(&ctx, &value) },
    );
    // rhai's standard package has its own `to_json` for maps (chars quoted as `'c'`, no size
    // bound); an exact-type overload here is found first, as the global namespace is searched
    // before packages. `parse_json(&str)` replaces the package's the same way.
    engine.register_fn(
        "to_json",
        |ctx: NativeCallContext, value: Map| -> Res<String> {
            to_json(&ctx, &Dynamic::from_map(value))
        },
    );
    engine.register_fn(
        "join",
        |ctx: NativeCallContext, items: Array, sep: &str| -> Res<String> {
            join(&items, sep, bound(ctx.engine().max_string_size()))
                .ok_or_else(|| too_long(&ctx, "join"))
        },
    );
}

fn register_misc(engine: &mut Engine) {
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
    engine.register_fn("uuid", |ctx: NativeCallContext| -> Res<String> {
        fits(&ctx, "uuid", 36)?;
        // A version 4 UUID (RFC 9562 §5.4) from rand's thread-local CSPRNG (seeded from the
        // OS), as `random_hex` and `crypto::random_token` use: no system call per id.
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        Ok(uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .to_string())
    });
    engine.register_fn(
        "random_hex",
        |ctx: NativeCallContext, bytes: i64| -> Res<String> {
            let n = usize::try_from(bytes)
                .ok()
                .filter(|n| (1..=MAX_RANDOM_BYTES as usize).contains(n))
                .ok_or_else(|| {
                    fail(
                        &ctx,
                        "random_hex",
                        format!("bytes must be from 1 to {MAX_RANDOM_BYTES}, got {bytes}"),
                    )
                })?;
            fits(&ctx, "random_hex", n * 2)?;
            let mut buf = vec![0u8; n];
            rand::rng().fill_bytes(&mut buf);
            Ok(hex(&buf))
        },
    );
    engine.register_fn(
        "jwt_sign",
        |ctx: NativeCallContext, claims: Dynamic, key: &str, alg: &str| -> Res<String> {
            jwt_sign(&ctx, &claims, key.as_bytes(), alg)
        },
    );
    // `jwt_sign(claims, key, alg, #{ key_encoding: "base64" })`: Auth0 client secrets and
    // many SSO secrets are base64 of random bytes (the auth0/rules `jwt` template signs with
    // `new Buffer(secret, 'base64')`), which no text string can hold.
    engine.register_fn(
        "jwt_sign",
        |ctx: NativeCallContext,
         claims: Dynamic,
         key: &str,
         alg: &str,
         options: rhai::Map|
         -> Res<String> {
            let name = "jwt_sign";
            let mut encoding = "text".to_owned();
            for (k, v) in &options {
                match (k.as_str(), v.clone().into_string()) {
                    ("key_encoding", Ok(e)) => encoding = e,
                    ("key_encoding", Err(t)) => {
                        return Err(fail(
                            &ctx,
                            name,
                            format!("key_encoding must be a string, got {t}"),
                        ))
                    }
                    (other, _) => {
                        return Err(fail(
                            &ctx,
                            name,
                            format!(
                                "unknown option {}; the one option is key_encoding",
                                quote(other)
                            ),
                        ))
                    }
                }
            }
            use base64::Engine as _;
            let bytes = match encoding.as_str() {
                "text" => key.as_bytes().to_vec(),
                "base64" => base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(key.trim_end_matches('='))
                    .map_err(|e| fail(&ctx, name, format!("the key is not base64: {e}")))?,
                "base64url" => base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(key.trim_end_matches('='))
                    .map_err(|e| fail(&ctx, name, format!("the key is not base64url: {e}")))?,
                other => {
                    return Err(fail(
                        &ctx,
                        name,
                        format!(
                            "key_encoding {} is not one of text, base64, base64url",
                            quote(other)
                        ),
                    ))
                }
            };
            jwt_sign(&ctx, &claims, &bytes, alg)
        },
    );
    engine.register_fn(
        "ip_in_range",
        |ctx: NativeCallContext, ip: &str, cidr: &str| -> Res<bool> {
            ip_in_range(ip, cidr).map_err(|e| fail(&ctx, "ip_in_range", e))
        },
    );
}

/// `jwt_sign(claims, key, alg)`: a compact JWS (RFC 7515 §7.1) with header
/// `{"typ":"JWT","alg":alg}`, signed with HMAC (RFC 7518 §3.2).
fn jwt_sign(ctx: &NativeCallContext, claims: &Dynamic, key: &[u8], alg: &str) -> Res<String> {
    let name = "jwt_sign";
    let Some((algorithm, sig_len)) = jwt_algorithm(alg) else {
        return Err(fail(
            ctx,
            name,
            format!(
                "unsupported algorithm {} (HS256, HS384 or HS512)",
                quote(alg)
            ),
        ));
    };
    if !claims.is_map() {
        return Err(fail(
            ctx,
            name,
            format!(
                "the claims must be a map, got {}",
                ctx.engine().map_type_name(claims.type_name())
            ),
        ));
    }
    if key.is_empty() {
        return Err(fail(ctx, name, "the key is empty"));
    }
    let header = jsonwebtoken::Header::new(algorithm);
    let header_len = serde_json::to_vec(&header)
        .map(|h| h.len())
        .map_err(|e| fail(ctx, name, e))?;
    // Count the claims' JSON first: the token is refused before anything large is built.
    let max = bound(ctx.engine().max_string_size());
    let mut counted = Capped::new(max, false);
    if let Err(e) = write_json(ctx.engine(), claims, &mut counted) {
        return Err(if counted.over {
            too_long(ctx, name)
        } else {
            fail(ctx, name, e)
        });
    }
    let b64 = |n: usize| base64::encoded_len(n, false).unwrap_or(usize::MAX);
    let len = b64(header_len)
        .saturating_add(b64(counted.len))
        .saturating_add(b64(sig_len))
        .saturating_add(2);
    fits(ctx, name, len)?;
    let json = Json {
        value: claims,
        engine: ctx.engine(),
        depth: 0,
    };
    let token = jsonwebtoken::encode(&header, &json, &jsonwebtoken::EncodingKey::from_secret(key))
        .map_err(|e| fail(ctx, name, e))?;
    fits(ctx, name, token.len())?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::rules::{Outcome, RuleError, RuleSet, RuleSetOptions, SandboxLimits};

    const X: &str = "https://example.com/x";

    /// `rep(s, n)`: `s` repeated `n` times (rhai's `pad` pads in place and returns `()`).
    const REP: &str = "\nfn rep(s, n) { let out = \"\"; for i in 0..n { out += s; } out }";

    fn set_with(source: &str, limits: SandboxLimits) -> RuleSet {
        let options = RuleSetOptions {
            limits,
            ..Default::default()
        };
        RuleSet::from_sources(vec![("r".into(), source.into())], json!({}), options)
            .unwrap_or_else(|e| panic!("{source}: {e}"))
    }

    fn run_with(source: &str, limits: SandboxLimits) -> Result<Outcome, RuleError> {
        set_with(source, limits).run(json!({"user_id": "u1"}), json!({"clientID": "app"}))
    }

    /// What a rule that sets the claim to `expr` leaves in it.
    fn eval(expr: &str) -> Value {
        let source = format!("context.accessToken[\"{X}\"] = {expr};{REP}");
        match run_with(&source, SandboxLimits::default()) {
            Ok(out) => out.access_token.get(X).cloned().unwrap_or(Value::Null),
            Err(e) => panic!("{expr}: {e}"),
        }
    }

    /// The message `try`/`catch` gets from each expression (every one must throw), one rule
    /// run each so that small string limits hold one message at a time.
    fn caught(exprs: &[&str], limits: SandboxLimits) -> Vec<String> {
        exprs
            .iter()
            .map(|e| {
                let source = format!(
                    "let m = (); try {{ let r = {e}; m = `no error: ${{r}}`; }} catch (e) {{ m = e; }}
                    context.accessToken[\"{X}\"] = m;{REP}"
                );
                let out = run_with(&source, limits.clone()).unwrap_or_else(|err| panic!("{e}: {err}"));
                match &out.access_token[X] {
                    Value::String(m) => m.clone(),
                    other => panic!("{e}: caught {other}"),
                }
            })
            .collect()
    }

    /// Each expression, uncaught, fails the run as a script error naming `helper`; caught, the
    /// rule gets the same message.
    fn assert_errors(helper: &str, exprs: &[&str]) {
        assert_errors_with(helper, exprs, SandboxLimits::default());
    }

    fn assert_errors_with(helper: &str, exprs: &[&str], limits: SandboxLimits) {
        let prefix = format!("{helper}: ");
        let msgs = caught(exprs, limits.clone());
        for (e, m) in exprs.iter().zip(&msgs) {
            assert!(m.starts_with(&prefix), "{e} was caught as {m:?}");
        }
        for e in exprs {
            match run_with(&format!("let r = {e};{REP}"), limits.clone()) {
                Err(RuleError::Script { message, line, .. }) => {
                    assert!(message.starts_with(&prefix), "{e}: {message}");
                    assert_eq!(line, 1, "{e}");
                }
                other => panic!("{e}: expected a script error, got {other:?}"),
            }
        }
    }

    #[test]
    fn sha256_known_vectors() {
        // RFC 6234's TEST1 ("abc") and the empty message.
        assert_eq!(
            eval(r#"sha256("abc")"#),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            eval(r#"sha256("")"#),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hmac_rfc4231_test_case_2() {
        assert_eq!(
            eval(r#"hmac_sha256("Jefe", "what do ya want for nothing?")"#),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            eval(r#"hmac_sha256_base64("Jefe", "what do ya want for nothing?")"#),
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
        );
    }

    #[test]
    fn base64_rfc4648_vectors() {
        // RFC 4648 §10.
        let vectors = [
            ("", "", ""),
            ("f", "Zg==", "Zg"),
            ("fo", "Zm8=", "Zm8"),
            ("foo", "Zm9v", "Zm9v"),
            ("foob", "Zm9vYg==", "Zm9vYg"),
            ("fooba", "Zm9vYmE=", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy", "Zm9vYmFy"),
        ];
        for (plain, padded, unpadded) in vectors {
            assert_eq!(eval(&format!("base64_encode({plain:?})")), padded);
            assert_eq!(eval(&format!("base64url_encode({plain:?})")), unpadded);
            for encoded in [padded, unpadded] {
                assert_eq!(eval(&format!("base64_decode({encoded:?})")), plain);
                assert_eq!(eval(&format!("base64url_decode({encoded:?})")), plain);
            }
        }
        // The two alphabets differ in the last two characters (RFC 4648 §4, §5).
        assert_eq!(
            eval(r#"base64_encode("~~~") + base64_encode("???")"#),
            "fn5+Pz8/"
        );
        assert_eq!(
            eval(r#"base64url_encode("~~~") + base64url_encode("???")"#),
            "fn5-Pz8_"
        );
        assert_eq!(eval(r#"base64url_decode("fn5-Pz8_")"#), "~~~???");
        assert_eq!(
            eval(r#"base64_decode(base64_encode("héllo wörld ✓"))"#),
            "héllo wörld ✓"
        );
    }

    #[test]
    fn base64_errors() {
        assert_errors(
            "base64_decode",
            &[
                r#"base64_decode("Zm9v!")"#,
                r#"base64_decode("fn5-")"#,
                r#"base64_decode("Z")"#,
                r#"base64_decode("/w==")"#,
            ],
        );
        assert_errors(
            "base64url_decode",
            &[r#"base64url_decode("fn5+")"#, r#"base64url_decode("_w")"#],
        );
        let msgs = caught(&[r#"base64_decode("/w==")"#], SandboxLimits::default());
        assert_eq!(msgs, ["base64_decode: the decoded bytes are not UTF-8"]);
    }

    #[test]
    fn url_encoding_like_javascript() {
        // encodeURIComponent leaves exactly A-Z a-z 0-9 - _ . ! ~ * ' ( ) alone.
        assert_eq!(
            eval(r#"url_encode("a b&c=d/é?!'()*~-_.+%")"#),
            "a%20b%26c%3Dd%2F%C3%A9%3F!'()*~-_.%2B%25"
        );
        assert_eq!(
            eval(r#"url_decode("a%20b%26c%3dd%2F%C3%A9%3F!'()*~-_.%2B%25+")"#),
            "a b&c=d/é?!'()*~-_.+%+"
        );
        assert_eq!(eval(r#"url_decode(url_encode("€ ✓ x=y&z"))"#), "€ ✓ x=y&z");
        assert_errors(
            "url_decode",
            &[
                r#"url_decode("%")"#,
                r#"url_decode("abc%4")"#,
                r#"url_decode("%zz")"#,
                r#"url_decode("%C3")"#,
                r#"url_decode("%C3%28")"#,
                r#"url_decode("%C3é")"#,
            ],
        );
    }

    #[test]
    fn parse_url_fields() {
        let url = eval(
            r#"parse_url("https://user@Example.COM:8443/a/b%20c?x=1&y=a+b&x=2&e=%C3%A9&flag#frag")"#,
        );
        assert_eq!(
            url,
            json!({
                "scheme": "https", "host": "example.com", "port": 8443, "path": "/a/b%20c",
                "query": {"x": "2", "y": "a b", "e": "é", "flag": ""}, "fragment": "frag"
            })
        );
        // Defaults: the scheme's port, `()` for what is absent, an empty query map.
        let plain = eval(
            r#"{ let u = parse_url("https://example.com"); [u.port, u.path, u.query, u.fragment == (), u.host] }"#,
        );
        assert_eq!(plain, json!([443, "/", {}, true, "example.com"]));
        let mail = eval(
            r#"{ let u = parse_url("mailto:jane@example.com"); [u.scheme, u.host == (), u.port == (), u.path] }"#,
        );
        assert_eq!(mail, json!(["mailto", true, true, "jane@example.com"]));
        assert_eq!(eval(r#"parse_url("http://[::1]/").host"#), "[::1]");
        assert_eq!(eval(r#"parse_url("http://h.example/").port"#), 80);
        assert_errors(
            "parse_url",
            &[
                r#"parse_url("not a url")"#,
                r#"parse_url("/relative/path")"#,
                r#"parse_url("https://exa mple.com/")"#,
                r#"parse_url("http://h:99999/")"#,
            ],
        );
    }

    #[test]
    fn json_round_trips() {
        let text = r#"{"a":[1,2.5,"s",null,true,-7],"b":{"c":null,"d":{}},"e":[],"big":18446744073709551615}"#;
        let value = eval(&format!("parse_json({text:?})"));
        assert_eq!(
            value,
            json!({"a": [1, 2.5, "s", null, true, -7], "b": {"c": null, "d": {}}, "e": [],
                   "big": 18446744073709551615.0_f64})
        );
        assert_eq!(
            eval(&format!(
                "{{ let v = parse_json({text:?}); [type_of(v.a[0]), type_of(v.a[3]), type_of(v.b)] }}"
            )),
            json!(["i64", "()", "map"])
        );
        assert_eq!(
            eval(r#"to_json(parse_json("{\"k\":[1,{\"n\":null}],\"s\":\"\\u00e9\\n\"}"))"#),
            r#"{"k":[1,{"n":null}],"s":"é\n"}"#
        );
        assert_eq!(
            eval(r#"to_json(#{ b: [true, (), 'c', 1.5, "q\"uote"], a: 1 })"#),
            r#"{"a":1,"b":[true,null,"c",1.5,"q\"uote"]}"#
        );
        assert_eq!(eval("to_json(())"), "null");
        assert_eq!(eval(r#"parse_json("null") == ()"#), true);
        assert_eq!(eval(r#"parse_json(" 42 ")"#), 42);
    }

    #[test]
    fn json_errors() {
        assert_errors(
            "parse_json",
            &[
                r#"parse_json("{")"#,
                r#"parse_json("")"#,
                r#"parse_json("[1,]")"#,
                r#"parse_json("{} x")"#,
                r#"parse_json(rep("[", 200))"#,
            ],
        );
        assert_errors(
            "to_json",
            &[
                "to_json(|x| x)",
                "to_json(timestamp())",
                "to_json(0..3)",
                "to_json([1, #{ f: Fn(\"sha256\") }])",
                "to_json(0.0 / 0.0)",
                "{ let a = []; for i in 0..200 { a = [a]; } to_json(a) }",
            ],
        );
        let msgs = caught(
            &["to_json(|x| x)", "to_json(0..3)", "to_json(timestamp())"],
            SandboxLimits::default(),
        );
        assert_eq!(
            msgs,
            [
                "to_json: a value of type `Fn` has no JSON form",
                "to_json: a value of type `range` has no JSON form",
                "to_json: a value of type `timestamp` has no JSON form",
            ]
        );
    }

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

    #[test]
    fn uuid_and_random_hex() {
        let ids = eval("[uuid(), uuid()]");
        let re = regex::Regex::new(
            "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
        )
        .unwrap();
        let (a, b) = (ids[0].as_str().unwrap(), ids[1].as_str().unwrap());
        assert!(re.is_match(a) && re.is_match(b), "{ids}");
        assert_ne!(a, b);
        let hexes = eval("[random_hex(1), random_hex(16), random_hex(16), random_hex(1024)]");
        let lens: Vec<usize> = hexes
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap().len())
            .collect();
        assert_eq!(lens, [2, 32, 32, 2048]);
        assert_ne!(hexes[1], hexes[2]);
        assert!(hexes.as_array().unwrap().iter().all(|h| h
            .as_str()
            .unwrap()
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())));
        assert_errors(
            "random_hex",
            &["random_hex(0)", "random_hex(1025)", "random_hex(-1)"],
        );
    }

    #[test]
    fn jwt_sign_takes_a_base64_key() {
        use base64::Engine as _;
        let raw = [0xabu8, 0xcd, 0xef, 0x12, 0x34, 0x56, 0x78, 0x90, 0xff, 0x00];
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        for (enc, key) in [
            ("base64", b64.clone()),
            ("base64", b64.trim_end_matches('=').to_owned()),
            (
                "base64url",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw),
            ),
        ] {
            let out = set_with(
                &format!(
                    r#"context.accessToken["{X}"] = jwt_sign(#{{ sub: "u1" }}, "{key}", "HS256", #{{ key_encoding: "{enc}" }});"#
                ),
                SandboxLimits::default(),
            )
            .run(json!({}), json!({}))
            .unwrap();
            let token = out.access_token[X].as_str().unwrap();
            let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
            v.required_spec_claims.clear();
            v.validate_exp = false;
            let data = jsonwebtoken::decode::<Value>(
                token,
                &jsonwebtoken::DecodingKey::from_secret(&raw),
                &v,
            )
            .unwrap();
            assert_eq!(data.claims["sub"], "u1", "{enc}");
        }
        for (opts, want) in [
            (r#"#{ key_encoding: "hex" }"#, "is not one of"),
            (r#"#{ encoding: "base64" }"#, "unknown option"),
        ] {
            let err = set_with(
                &format!(r#"jwt_sign(#{{}}, "a2V5", "HS256", {opts});"#),
                SandboxLimits::default(),
            )
            .run(json!({}), json!({}))
            .unwrap_err()
            .to_string();
            assert!(err.contains(want), "{err}");
        }
        let err = set_with(
            r#"jwt_sign(#{}, "!!!", "HS256", #{ key_encoding: "base64" });"#,
            SandboxLimits::default(),
        )
        .run(json!({}), json!({}))
        .unwrap_err()
        .to_string();
        assert!(err.contains("not base64"), "{err}");
    }

    #[test]
    fn jwt_sign_verifies_with_jsonwebtoken() {
        use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
        for (alg, algorithm) in [
            ("HS256", Algorithm::HS256),
            ("HS384", Algorithm::HS384),
            ("HS512", Algorithm::HS512),
        ] {
            let token = eval(&format!(
                r#"jwt_sign(#{{ sub: "u1", n: 1, exp: 4102444800, roles: ["a", "b"], x: () }}, "s3cret", "{alg}")"#
            ));
            let token = token.as_str().unwrap();
            let header = decode_header(token).unwrap();
            assert_eq!(header.alg, algorithm);
            assert_eq!(header.typ.as_deref(), Some("JWT"));
            let data = decode::<Value>(
                token,
                &DecodingKey::from_secret(b"s3cret"),
                &Validation::new(algorithm),
            )
            .unwrap();
            assert_eq!(
                data.claims,
                json!({"sub": "u1", "n": 1, "exp": 4102444800_u64, "roles": ["a", "b"], "x": null})
            );
            assert!(decode::<Value>(
                token,
                &DecodingKey::from_secret(b"other"),
                &Validation::new(algorithm)
            )
            .is_err());
        }
        assert_errors(
            "jwt_sign",
            &[
                r#"jwt_sign(#{}, "k", "RS256")"#,
                r#"jwt_sign(#{}, "k", "none")"#,
                r#"jwt_sign(#{}, "k", "hs256")"#,
                r#"jwt_sign("claims", "k", "HS256")"#,
                r#"jwt_sign(#{}, "", "HS256")"#,
                r#"jwt_sign(#{ f: |x| x }, "k", "HS256")"#,
            ],
        );
    }

    #[test]
    fn ip_ranges() {
        let cases = [
            ("10.1.2.3", "10.0.0.0/8", true),
            ("11.1.2.3", "10.0.0.0/8", false),
            ("192.168.1.255", "192.168.1.0/24", true),
            ("192.168.2.0", "192.168.1.0/24", false),
            ("1.2.3.4", "0.0.0.0/0", true),
            ("1.2.3.4", "1.2.3.4/32", true),
            ("1.2.3.5", "1.2.3.4/32", false),
            ("1.2.3.4", "1.2.3.4", true),
            ("10.1.2.3", "10.200.0.1/8", true),
            ("2001:db8::1", "2001:db8::/32", true),
            ("2001:db9::1", "2001:db8::/32", false),
            ("2001:DB8:0:0:0:0:0:ffff", "2001:db8::/64", true),
            ("::1", "::1/128", true),
            ("fe80::1", "fe80::/10", true),
            ("febf::1", "fe80::/10", true),
            ("fec0::1", "fe80::/10", false),
            ("2001:db8::1", "::/0", true),
            // Across families: IPv4 is compared as its IPv4-mapped IPv6 form.
            ("10.1.2.3", "2001:db8::/32", false),
            ("10.1.2.3", "::ffff:0:0/96", true),
            ("10.1.2.3", "::ffff:10.0.0.0/104", true),
            ("::ffff:10.1.2.3", "10.0.0.0/8", true),
            ("::ffff:11.1.2.3", "10.0.0.0/8", false),
            ("2001:db8::1", "10.0.0.0/8", false),
            ("2001:db8::1", "0.0.0.0/0", false),
            ("::a01:203", "10.0.0.0/8", false),
        ];
        for (ip, cidr, expected) in cases {
            assert_eq!(
                eval(&format!("ip_in_range({ip:?}, {cidr:?})")),
                expected,
                "{ip} in {cidr}"
            );
        }
        assert_errors(
            "ip_in_range",
            &[
                r#"ip_in_range("10.0.0.256", "10.0.0.0/8")"#,
                r#"ip_in_range("", "10.0.0.0/8")"#,
                r#"ip_in_range("fe80::1%eth0", "fe80::/10")"#,
                r#"ip_in_range("10.0.0.1", "10.0.0.0/33")"#,
                r#"ip_in_range("10.0.0.1", "10.0.0.0/")"#,
                r#"ip_in_range("10.0.0.1", "10.0.0.0/+8")"#,
                r#"ip_in_range("10.0.0.1", "10.0.0.0/8/8")"#,
                r#"ip_in_range("::1", "::/129")"#,
                r#"ip_in_range("10.0.0.1", "nonsense")"#,
                r#"ip_in_range("10.0.0.1", "10.0.0/8")"#,
            ],
        );
    }

    #[test]
    fn join_function_and_method() {
        assert_eq!(
            eval(r#"["a", 1, (), true, 'c', 1.5, [2, "x"]].join(", ")"#),
            r#"a, 1, , true, c, 1.5, [2, "x"]"#
        );
        assert_eq!(eval(r#"join(["x", "y"], "")"#), "xy");
        assert_eq!(eval(r#"join([], "-")"#), "");
        assert_eq!(eval(r#"[()].join("-")"#), "");
        // On a constant's array (a non-pure method would refuse it).
        let set = RuleSet::from_sources(
            vec![(
                "r".into(),
                format!(r#"context.accessToken["{X}"] = configuration.roles.join(" ");"#),
            )],
            json!({"roles": ["admin", "editor"]}),
            Default::default(),
        )
        .unwrap();
        let out = set.run(json!({}), json!({})).unwrap();
        assert_eq!(out.access_token[X], "admin editor");
    }

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

    /// Operations a rule needs: the smallest `max_operations` it runs under.
    fn operations(source: &str) -> u64 {
        let ok = |max: u64| {
            let limits = SandboxLimits {
                max_operations: max,
                ..Default::default()
            };
            run_with(source, limits).is_ok()
        };
        let (mut lo, mut hi) = (1, 100_000);
        assert!(ok(hi), "{source} does not run");
        while lo < hi {
            let mid = (lo + hi) / 2;
            if ok(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// Operations one `let r = <expr>;` adds to each turn of a loop.
    fn per_turn(expr: &str) -> u64 {
        let rule = |n: u32| {
            format!(
                r#"let a = "abc"; let b = "YWJj"; let u = "https://example.com/p?q=1";
                let j = "[1,2]"; let m = #{{ sub: "u1" }}; let d = "2024-05-01T10:00:00Z";
                let t = 1714557600; let f = "%F"; let h = "HS256"; let n = 16;
                let ip = "10.1.2.3"; let c = "10.0.0.0/8"; let arr = ["x", "y"];
                for i in 0..{n} {{ let r = {expr}; }}"#
            )
        };
        (operations(&rule(20)) - operations(&rule(10))) / 10
    }

    #[test]
    fn each_helper_is_one_operation() {
        // rhai counts one operation for a call, one per argument expression, and one more for
        // the dot of a method call with arguments; its own `contains` is the yardstick.
        let base = per_turn("a");
        assert_eq!(
            per_turn("contains(arr, a)"),
            base + 3,
            "rhai's accounting changed"
        );
        assert_eq!(
            per_turn("arr.contains(a)"),
            base + 4,
            "rhai's accounting changed"
        );
        let calls = [
            ("sha256(a)", 1),
            ("hmac_sha256(a, a)", 2),
            ("hmac_sha256_base64(a, a)", 2),
            ("base64_encode(a)", 1),
            ("base64_decode(b)", 1),
            ("base64url_encode(a)", 1),
            ("base64url_decode(b)", 1),
            ("url_encode(u)", 1),
            ("url_decode(u)", 1),
            ("parse_url(u)", 1),
            ("parse_json(j)", 1),
            ("to_json(m)", 1),
            ("to_json(arr)", 1),
            ("parse_date(d)", 1),
            ("format_date(t, f)", 2),
            ("uuid()", 0),
            ("random_hex(n)", 1),
            ("jwt_sign(m, a, h)", 3),
            ("ip_in_range(ip, c)", 2),
            ("join(arr, a)", 2),
        ];
        for (call, args) in calls {
            assert_eq!(per_turn(call), base + 1 + args, "{call}");
        }
        assert_eq!(per_turn("arr.join(a)"), base + 4, "arr.join(a)");
        assert_eq!(per_turn("a.sha256()"), base + 2, "a.sha256()");
    }
}
