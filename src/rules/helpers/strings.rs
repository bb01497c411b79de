//! `join(array, separator)`, as a function and as a method.

use std::fmt;

use rhai::{Array, Engine, ImmutableString, NativeCallContext};

use super::bounds::{bound, too_long, Capped};
use super::Res;

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

/// Registers `join`.
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn(
        "join",
        |ctx: NativeCallContext, items: Array, sep: &str| -> Res<String> {
            join(&items, sep, bound(ctx.engine().max_string_size()))
                .ok_or_else(|| too_long(&ctx, "join"))
        },
    );
}

#[cfg(test)]
mod tests {
    use crate::rules::RuleSet;
    use serde_json::json;

    use super::super::tests::{eval, X};

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
}
