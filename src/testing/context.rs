//! The default context every case starts from, and the deep merge of a case's own context and
//! user over it.

use serde_json::{Map, Value};

use crate::model::Context;

/// The context a case runs with when it gives none: [`Context::default`], the same fields the
/// token server fills for a login. A case's own context is merged over it with [`merge_deep`].
pub fn default_context() -> Map<String, Value> {
    Context::default().into()
}

/// Merges `over` into `base`: where both are objects, key by key (recursively); anywhere else
/// (arrays, strings, numbers, `null`) `over` replaces `base`.
pub fn merge_deep(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge_deep(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

/// The context a case runs with: the default (its authentication time at `now` when the case
/// pins the clock) with the case's context merged deeply over it. Public so that tools which
/// record cases (`claimrules playground`) run inputs exactly as the runner will.
pub fn case_context(given: Option<&Value>, now: Option<i64>) -> Map<String, Value> {
    let mut context = Context::default();
    if let Some(now) = now {
        context = context.authentication_methods([("pwd", now)]);
    }
    let mut context = Value::from(context);
    if let Some(given) = given {
        merge_deep(&mut context, given);
    }
    match context {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The scope the app asked for (authorize query, else refresh body): what the token gets when
/// no rule rewrites it.
pub fn requested_scope(context: &Map<String, Value>) -> Option<Vec<String>> {
    let request = context.get("request")?;
    ["query", "body"].iter().find_map(|part| {
        request
            .get(part)?
            .get("scope")?
            .as_str()
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
    })
}
