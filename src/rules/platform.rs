//! Auth0 platform fields of `context` that claimrules does not implement. On Auth0, setting
//! `context.multifactor` makes the login ask for a second factor; here nothing would happen, so
//! a ported MFA rule would quietly protect nothing. Setting one therefore fails the login
//! (closed), naming the field, unless the rule set lists it in `rules.toml`'s
//! `ignore_platform_fields`; `claimrules check` warns where it sees the assignment.

use rhai::Scope;
use serde_json::Value;

use super::{CompiledRule, RuleError};

/// The fields, with what Auth0 does with each.
pub const PLATFORM_FIELDS: &[(&str, &str)] = &[
    (
        "multifactor",
        "on Auth0 it makes the login ask for a second factor (MFA)",
    ),
    (
        "redirect",
        "on Auth0 it sends the user to a URL in the middle of the login",
    ),
    (
        "samlConfiguration",
        "on Auth0 it changes the SAML response; claimrules issues no SAML",
    ),
    (
        "sso",
        "on Auth0 it describes the single sign-on session; claimrules keeps none",
    ),
    (
        "primaryUser",
        "on Auth0 it switches the login to a linked primary account; claimrules links none",
    ),
];

/// The names of [`PLATFORM_FIELDS`], comma-separated.
fn names() -> String {
    PLATFORM_FIELDS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Err` naming the first entry of `ignore_platform_fields` that is not a platform field.
pub(crate) fn validate(fields: &[String]) -> Result<(), String> {
    match fields
        .iter()
        .find(|f| !PLATFORM_FIELDS.iter().any(|(n, _)| n == f))
    {
        Some(unknown) => Err(format!(
            "ignore_platform_fields: {unknown:?} is not a platform field (known: {})",
            names()
        )),
        None => Ok(()),
    }
}

/// The platform fields of the input context, to tell a rule's change from the input's value.
pub(crate) fn snapshot(context: &Value) -> Vec<Option<Value>> {
    PLATFORM_FIELDS
        .iter()
        .map(|(name, _)| context.get(*name).filter(|v| !v.is_null()).cloned())
        .collect()
}

/// `Err(field)` when the scope's `context` holds a platform field that is not ignored and
/// differs from the input's.
pub(crate) fn check(
    scope: &Scope,
    before: &[Option<Value>],
    ignored: &[String],
) -> Result<(), &'static str> {
    let Some(context) = scope
        .get("context")
        .and_then(|d| d.read_lock::<rhai::Map>())
    else {
        return Ok(());
    };
    for ((name, _), before) in PLATFORM_FIELDS.iter().zip(before) {
        let now = context.get(*name).filter(|v| !v.is_unit());
        let changed = match (now, before) {
            (None, None) => false,
            (Some(now), Some(before)) => {
                rhai::serde::from_dynamic::<Value>(now).ok().as_ref() != Some(before)
            }
            _ => true,
        };
        if changed && !ignored.iter().any(|i| i == name) {
            return Err(name);
        }
    }
    Ok(())
}

/// What a platform field does on Auth0.
pub(crate) fn meaning(field: &str) -> &'static str {
    PLATFORM_FIELDS
        .iter()
        .find(|(n, _)| *n == field)
        .map_or("", |(_, m)| m)
}

/// The message for a rule that sets `field`.
pub(crate) fn message(field: &str) -> String {
    format!(
        "context.{field} is an Auth0 platform field that claimrules does not implement ({}), so \
         the login fails rather than go on without it; if the rule set does not need it, add \
         `ignore_platform_fields = [\"{field}\"]` to rules.toml",
        meaning(field)
    )
}

/// The error of a rule that set `field`, at the line of the assignment.
pub(crate) fn error(rule: &CompiledRule, field: &str) -> RuleError {
    let (line, column) =
        super::sites::assignment_position(&rule.ast, &["context", field]).unwrap_or((0, 0));
    RuleError::Script {
        rule: rule.name.clone(),
        line,
        column,
        message: message(field),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_ignored_fields_are_refused_by_name() {
        assert!(validate(&["multifactor".into(), "sso".into()]).is_ok());
        let err = validate(&["mfa".into()]).unwrap_err();
        assert!(err.contains("\"mfa\" is not a platform field"), "{err}");
        assert!(err.contains("multifactor, redirect"), "{err}");
    }
}
