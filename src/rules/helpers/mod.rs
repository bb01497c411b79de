//! Native helpers for rules (hashing, encodings, URLs, JSON, dates, ids, JWTs, CIDR ranges):
//! each costs one operation, where the same work written in Rhai would cost thousands.
//!
//! Every helper refuses bad input with [`helper_error`] (`"<helper>: <what is wrong>"`), which a
//! rule's `try`/`catch` can catch and which, uncaught, fails the run as a script error. Every
//! helper also bounds what it builds by the engine's size limits (strings, arrays, maps) and
//! refuses before it allocates more, instead of leaving the check to rhai after the fact.

mod bounds;
mod digest;
mod encoding;
mod ids;
mod json;
pub(super) use json::to_dynamic;
mod jwt;
mod net;
mod strings;
#[cfg(test)]
mod tests;
mod time;

use std::fmt;

use rhai::{Engine, EvalAltResult, NativeCallContext};

use super::engine::helper_error;

type Res<T> = Result<T, Box<EvalAltResult>>;

/// The catchable error of helper `name`.
fn fail(ctx: &NativeCallContext, name: &str, what: impl fmt::Display) -> Box<EvalAltResult> {
    helper_error(ctx.call_position(), format!("{name}: {what}"))
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

/// Registers every helper of this module on `engine`.
pub(crate) fn register(engine: &mut Engine) {
    digest::register(engine);
    encoding::register(engine);
    net::register(engine);
    json::register(engine);
    strings::register(engine);
    time::register(engine);
    ids::register(engine);
    jwt::register(engine);
}
