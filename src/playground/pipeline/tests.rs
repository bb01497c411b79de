//! Unit tests of the playground pipeline.

use serde_json::json;

use super::run_report::locate_denial;
use super::{object_input, without_default_nulls, PipelineError};

#[test]
fn denials_are_located_by_message_or_the_only_call() {
    let src = "let a = 1;\nif a == 1 {\n    deny(\"no way\");\n}\n";
    assert_eq!(locate_denial(src, "no way"), Some((3, 5)));
    assert_eq!(locate_denial(src, "other"), Some((3, 5)));
    let two = "deny(\"a\");\n// deny(\"b\") in a comment\nthrow \"b\";\n";
    assert_eq!(locate_denial(two, "b"), Some((3, 1)));
    assert_eq!(locate_denial(two, "c"), None);
}

#[test]
fn nulls_the_default_also_has_are_left_out() {
    let mut v = json!({"a": null, "b": {"c": null, "d": 1}, "e": null});
    without_default_nulls(&mut v, &json!({"a": null, "b": {"c": 2}}));
    assert_eq!(v, json!({"b": {"c": null, "d": 1}}));
}

#[test]
fn inputs_are_objects_or_their_text() {
    let m = object_input("user", &json!("{\"a\": 1}")).unwrap();
    assert_eq!(m["a"], 1);
    match object_input("user", &json!("{\n  \"a\": }")) {
        Err(PipelineError::Input { line, column, .. }) => assert_eq!((line, column), (2, 8)),
        other => panic!("{other:?}"),
    }
    assert!(object_input("context", &json!([1])).is_err());
    assert!(object_input("context", &json!("[1]")).is_err());
}
