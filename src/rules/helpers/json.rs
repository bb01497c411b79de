//! `parse_json` and `to_json`: JSON to rhai values and back, bounded by the engine's limits and
//! by serde_json's nesting limit.

use rhai::{Array, Dynamic, Engine, ImmutableString, Map, NativeCallContext};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;

use super::bounds::{bound, too_long, Budget, Capped};
use super::{fail, Res};

/// Deepest nesting `to_json` writes and `jwt_sign` signs: serde_json's own parsing limit, so
/// whatever a helper writes, `parse_json` (and any serde_json verifier) reads back.
const MAX_JSON_DEPTH: usize = 128;

/// A rhai value as JSON, for serde: unit, bool, int, float, string, char, and arrays and maps
/// of those, at most [`MAX_JSON_DEPTH`] levels deep; anything else fails naming its type.
pub(super) struct Json<'a> {
    pub(super) value: &'a Dynamic,
    pub(super) engine: &'a Engine,
    pub(super) depth: usize,
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
pub(super) fn write_json(engine: &Engine, value: &Dynamic, out: &mut Capped) -> Result<(), String> {
    let json = Json {
        value,
        engine,
        depth: 0,
    };
    serde_json::to_writer(&mut *out, &json).map_err(|e| e.to_string())
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
        Value::Array(items) => Dynamic::from_array(
            items
                .iter()
                .map(|item| {
                    budget.item()?;
                    json_to_dynamic(item, budget)
                })
                .collect::<Result<Array, String>>()?,
        ),
        Value::Object(entries) => Dynamic::from_map(
            entries
                .iter()
                .map(|(key, item)| {
                    budget.entry()?;
                    Ok((key.as_str().into(), json_to_dynamic(item, budget)?))
                })
                .collect::<Result<Map, String>>()?,
        ),
    })
}

/// A JSON value the engine itself passes in (a login's `user` and `context`, the
/// `configuration`) as a rhai value, mapped as [`json_to_dynamic`] maps it (and as
/// `rhai::serde::to_dynamic` would) with no budget: these values are the server's, not a rule's.
/// Not through serde: that path allocates each map key twice, and the conversion was 3 % of a
/// refresh's CPU (`scripts/profile-refresh`).
pub(crate) fn to_dynamic(value: &Value) -> Dynamic {
    // An unbounded budget refuses nothing.
    json_to_dynamic(value, &mut Budget::unbounded()).unwrap_or(Dynamic::UNIT)
}

/// Registers `parse_json` and `to_json`.
pub(super) fn register(engine: &mut Engine) {
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
}

#[cfg(test)]
mod tests {
    use crate::rules::SandboxLimits;
    use serde_json::json;

    use super::super::tests::{assert_errors, caught, eval};

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

    /// The direct conversion gives the rules the same values the serde path did, for every JSON
    /// kind: integers in and beyond `i64`, floats, `null`, nested arrays and objects, keys longer
    /// than an inline identifier, non-ASCII text.
    #[test]
    fn to_dynamic_maps_every_json_kind_as_rhai_serde_does() {
        let value = json!({
            "null": null, "t": true, "f": false,
            "int": -42, "big": u64::MAX, "max": i64::MAX, "float": 1.5, "tiny": 1e-300,
            "text": "café ✓", "empty": "", "list": [1, "two", [3.0, null], {"k": []}],
            "a key longer than twenty-three bytes, so not inline": {"nested": {"deep": [true]}},
            "obj": {}
        });
        let ours = super::to_dynamic(&value);
        let serde: rhai::Dynamic = rhai::serde::to_dynamic(&value).expect("serde path");
        assert_eq!(format!("{ours:?}"), format!("{serde:?}"));
        assert_eq!(ours.type_name(), serde.type_name());
        let back: serde_json::Value = rhai::serde::from_dynamic(&ours).expect("back to JSON");
        let mut expected = value.clone();
        expected["big"] = json!(u64::MAX as f64);
        assert_eq!(back, expected);
    }
}
