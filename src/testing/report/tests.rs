//! Unit tests of the reporters.

use serde_json::json;

use super::color_enabled;
use super::junit::xml_escape;
use super::text::{failure_headline, render_failure, Style};
use crate::rules::RuleError;
use crate::testing::Failure;

#[test]
fn color_only_on_a_terminal_without_no_color() {
    assert!(color_enabled(true, None));
    assert!(!color_enabled(false, None));
    assert!(!color_enabled(true, Some(std::ffi::OsStr::new("1"))));
    // An empty NO_COLOR does not disable color (no-color.org).
    assert!(color_enabled(true, Some(std::ffi::OsStr::new(""))));
}

#[test]
fn xml_escape_covers_markup_and_control_characters() {
    assert_eq!(
        xml_escape("a<b>&\"c'\u{1}\n"),
        "a&lt;b&gt;&amp;&quot;c&apos;\n"
    );
}

#[test]
fn every_failure_kind_serializes_to_an_object() {
    use crate::claims::{Refusal, TokenKind};
    use crate::rules::Warning;
    let err = RuleError::Denied {
        rule: "r".into(),
        message: "m".into(),
    };
    let all = [
        Failure::Claim {
            token: TokenKind::IdToken,
            key: "k".into(),
            expected: json!(1),
            actual: Some(json!(2)),
        },
        Failure::UnexpectedClaim {
            token: TokenKind::AccessToken,
            key: "k".into(),
            actual: json!(1),
        },
        Failure::PresentClaim {
            token: TokenKind::AccessToken,
            key: "k".into(),
            actual: json!(1),
        },
        Failure::Scope {
            expected: vec!["a".into()],
            actual: None,
        },
        Failure::NotFailed {
            expected: "a denial".into(),
        },
        Failure::DenialMessage {
            rule: "r".into(),
            expected: "x".into(),
            actual: "m".into(),
        },
        Failure::WrongFailure {
            expected: "an error".into(),
            actual: err.clone(),
        },
        Failure::Unexpected { error: err },
        Failure::MissingLog {
            expected: "l".into(),
        },
        Failure::MissingWarning {
            expected: "w".into(),
        },
        Failure::DroppedClaim(Warning {
            rule: "r".into(),
            token: TokenKind::AccessToken,
            key: "roles".into(),
            reason: Refusal::NotNamespaced,
        }),
    ];
    for f in &all {
        let v = serde_json::to_value(f).expect("serializes");
        assert!(v["kind"].is_string(), "{v}");
        assert!(!failure_headline(f).is_empty());
    }
}

#[test]
fn colored_diff_uses_ansi_codes_and_plain_does_not() {
    let f = Failure::Claim {
        token: crate::claims::TokenKind::AccessToken,
        key: "https://x.com/a".into(),
        expected: json!(1),
        actual: None,
    };
    let colored = render_failure(&f, &Style { color: true });
    assert!(
        colored.contains("\x1b[31m- expected: 1\x1b[0m"),
        "{colored}"
    );
    assert!(colored.contains("\x1b[32m+ actual:   (missing)\x1b[0m"));
    let plain = render_failure(&f, &Style { color: false });
    assert!(!plain.contains('\x1b'));
    assert!(plain.contains("- expected: 1"));
}
