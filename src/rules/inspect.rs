//! What each rule left in the scope: the scope rewrite, the claims' JSON shape and the
//! namespace rule's verdicts, remembered per set.

use std::collections::HashMap;

use rhai::{Dynamic, Scope};
use serde_json::{Map, Value};

use super::{sites, RuleError, RuleSet};
use crate::claims::{self, NamespacePolicy, Refusal, TokenKind};

/// Most claim-key verdicts a set remembers.
const VERDICT_CACHE_CAP: usize = 4096;

impl RuleSet {
    /// After each rule: validate a scope rewrite and attribute refused claim keys to the rule.
    pub(super) fn inspect_claims(
        &self,
        scope: &Scope,
        rule: &str,
        policy: NamespacePolicy,
        offenders: &mut HashMap<(TokenKind, String), (String, Refusal)>,
        scope_list: &mut Option<Vec<String>>,
    ) -> Result<(), RuleError> {
        let Some(context) = scope
            .get("context")
            .and_then(|d| d.read_lock::<rhai::Map>())
        else {
            let (line, column) = self.position_of(rule, &["context"]);
            return Err(RuleError::Script {
                rule: rule.to_owned(),
                line,
                column,
                message: "the rule replaced `context` with something that is not a map".into(),
            });
        };
        for kind in [TokenKind::AccessToken, TokenKind::IdToken] {
            let Some(map) = context
                .get(kind.context_field())
                .and_then(|d| d.read_lock::<rhai::Map>())
            else {
                let (line, column) = self.position_of(rule, &["context", kind.context_field()]);
                return Err(RuleError::Script {
                    rule: rule.to_owned(),
                    line,
                    column,
                    message: format!("context.{} must stay a map", kind.context_field()),
                });
            };
            if kind == TokenKind::AccessToken && !map.contains_key("scope") {
                // No rewrite, or a later rule removed it: the granted scope stands.
                *scope_list = None;
            }
            for (key, value) in map.iter() {
                let key = key.as_str();
                if kind == TokenKind::AccessToken && key == "scope" {
                    if value.is_unit() {
                        *scope_list = None;
                        continue;
                    }
                    let json: Value =
                        rhai::serde::from_dynamic(value).map_err(|e| RuleError::InvalidScope {
                            rule: rule.to_owned(),
                            message: e.to_string(),
                        })?;
                    *scope_list =
                        Some(
                            claims::parse_scope(&json).map_err(|e| RuleError::InvalidScope {
                                rule: rule.to_owned(),
                                message: e.to_string(),
                            })?,
                        );
                    continue;
                }
                if value.is_unit() {
                    continue;
                }
                // Checked here, not at the end, so the error can name the rule.
                json_shape(value, MAX_CLAIM_DEPTH).map_err(|what| {
                    let (line, column) =
                        self.position_of(rule, &["context", kind.context_field(), key]);
                    RuleError::Script {
                        rule: rule.to_owned(),
                        line,
                        column,
                        message: format!("context.{}[{key:?}] {what}", kind.context_field()),
                    }
                })?;
                if offenders.contains_key(&(kind, key.to_owned())) {
                    continue;
                }
                if let Err(reason) = self.verdict(kind, key) {
                    if policy == NamespacePolicy::Reject {
                        return Err(RuleError::Namespace {
                            rule: rule.to_owned(),
                            key: key.to_owned(),
                            token: kind,
                            reason,
                        });
                    }
                    offenders.insert((kind, key.to_owned()), (rule.to_owned(), reason));
                }
            }
        }
        Ok(())
    }

    /// Where rule `rule` assigns `path` (see [`sites::assignment_position`]); `(0, 0)` when
    /// no assignment is found.
    pub(super) fn position_of(&self, rule: &str, path: &[&str]) -> (usize, usize) {
        self.rules
            .iter()
            .find(|r| r.name == rule)
            .and_then(|r| sites::assignment_position(&r.ast, path))
            .unwrap_or((0, 0))
    }

    /// `claims::check_claim` for this set's reserved hosts, remembered across runs: claim keys
    /// are nearly always the same few literals, and parsing them as URLs after every rule of
    /// every run was a tenth of the pipeline's time.
    pub(super) fn verdict(&self, kind: TokenKind, key: &str) -> Result<(), Refusal> {
        let cache = match kind {
            TokenKind::AccessToken => &self.verdicts[0],
            TokenKind::IdToken => &self.verdicts[1],
        };
        if let Some(v) = cache.read().ok().and_then(|c| c.get(key).copied()) {
            return v;
        }
        let v = claims::check_claim(kind, key, &self.reserved);
        if let Ok(mut c) = cache.write() {
            // Bounded: rules that invent keys per user must not grow it without end.
            if c.len() < VERDICT_CACHE_CAP {
                c.insert(key.to_owned(), v);
            }
        }
        v
    }
}

/// Deepest nesting of a claim value. Verifiers parse tokens with JSON parsers that refuse deep
/// nesting (serde_json stops at 128 levels), and a bound keeps every recursive walk shallow.
pub(super) const MAX_CLAIM_DEPTH: usize = 64;

/// Deepest nesting of the user the rules hand back (serde_json's own parsing limit).
pub(super) const MAX_USER_DEPTH: usize = 128;

/// `Ok` when `value` has a JSON form no deeper than `depth` levels; else what is wrong with it.
pub(super) fn json_shape(value: &Dynamic, depth: usize) -> Result<(), String> {
    if value.is_unit()
        || value.is_bool()
        || value.is_int()
        || value.is_float()
        || value.is_string()
        || value.is_char()
    {
        return Ok(());
    }
    let nested = value.is_array() || value.is_map();
    if nested && depth == 0 {
        return Err("nests too deeply to be issued as JSON".into());
    }
    if let Some(items) = value.read_lock::<rhai::Array>() {
        return items.iter().try_for_each(|v| json_shape(v, depth - 1));
    }
    if let Some(map) = value.read_lock::<rhai::Map>() {
        return map.values().try_for_each(|v| json_shape(v, depth - 1));
    }
    Err(format!(
        "holds a value of type `{}`, which has no JSON form",
        value.type_name()
    ))
}

pub(super) fn token_map(scope: &Scope, kind: TokenKind) -> Result<Map<String, Value>, RuleError> {
    let map = scope
        .get("context")
        .and_then(|c| {
            c.read_lock::<rhai::Map>()
                .map(|m| m.get(kind.context_field()).cloned())
        })
        .flatten()
        .unwrap_or(Dynamic::UNIT);
    match rhai::serde::from_dynamic::<Value>(&map) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Ok(Map::new()),
        Err(e) => Err(RuleError::Input(format!(
            "context.{}: {e}",
            kind.context_field()
        ))),
    }
}
