//! Checking a run against a case's expectations, and the [`Failure`]s that name what differed.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Case, Denied, NamespaceMode};
use crate::claims::TokenKind;
use crate::rules::{MetadataUpdates, Outcome, RuleError, RuleLog, Warning};

impl Case {
    pub(super) fn check(
        &self,
        result: &Result<Outcome, RuleError>,
        logs: &[RuleLog],
        requested: Option<Vec<String>>,
        mode: NamespaceMode,
    ) -> Vec<Failure> {
        let e = &self.expect;
        let mut failures = Vec::new();
        match (result, &e.denied, &e.error) {
            (Err(RuleError::Denied { rule, message }), Some(want), _) => {
                if let Denied::Message(text) = want {
                    if !message.contains(text.as_str()) {
                        failures.push(Failure::DenialMessage {
                            rule: rule.clone(),
                            expected: text.clone(),
                            actual: message.clone(),
                        });
                    }
                }
            }
            (Err(err), Some(want), _) => failures.push(Failure::WrongFailure {
                expected: format!("a denial{}", denied_suffix(want)),
                actual: err.clone(),
            }),
            (Ok(_), Some(want), _) => failures.push(Failure::NotFailed {
                expected: format!("a denial{}", denied_suffix(want)),
            }),
            (Err(err @ RuleError::Denied { .. }), None, Some(text)) => {
                failures.push(Failure::WrongFailure {
                    expected: format!("a rule error containing {text:?}"),
                    actual: err.clone(),
                })
            }
            (Err(err), None, Some(text)) => {
                if !err.to_string().contains(text.as_str()) {
                    failures.push(Failure::WrongFailure {
                        expected: format!("a rule error containing {text:?}"),
                        actual: err.clone(),
                    });
                }
            }
            (Ok(_), None, Some(text)) => failures.push(Failure::NotFailed {
                expected: format!("a rule error containing {text:?}"),
            }),
            (Err(err), None, None) => failures.push(Failure::Unexpected { error: err.clone() }),
            (Ok(out), None, None) => self.check_outcome(out, requested, mode, &mut failures),
        }
        for text in &e.logs {
            let found = logs
                .iter()
                .any(|l| l.lines.iter().any(|line| line.contains(text.as_str())));
            if !found {
                failures.push(Failure::MissingLog {
                    expected: text.clone(),
                });
            }
        }
        failures
    }

    pub(super) fn check_metadata(&self, got: &MetadataUpdates, failures: &mut Vec<Failure>) {
        let e = &self.expect;
        for (field, expected, actual) in [
            ("app_metadata", &e.app_metadata, &got.app_metadata),
            ("user_metadata", &e.user_metadata, &got.user_metadata),
        ] {
            let Some(expected) = expected else { continue };
            let empty = Map::new();
            let actual = actual.as_ref().unwrap_or(&empty);
            if expected.is_empty() && !actual.is_empty() {
                failures.push(Failure::Metadata {
                    field,
                    key: None,
                    expected: Value::Object(Map::new()),
                    actual: Some(Value::Object(actual.clone())),
                });
            }
            for (key, want) in expected {
                let have = actual.get(key);
                if have != Some(want) {
                    failures.push(Failure::Metadata {
                        field,
                        key: Some(key.clone()),
                        expected: want.clone(),
                        actual: have.cloned(),
                    });
                }
            }
            if e.exact {
                for (key, have) in actual {
                    if !expected.contains_key(key) {
                        failures.push(Failure::Metadata {
                            field,
                            key: Some(key.clone()),
                            expected: Value::Null,
                            actual: Some(have.clone()),
                        });
                    }
                }
            }
        }
    }

    fn check_outcome(
        &self,
        out: &Outcome,
        requested: Option<Vec<String>>,
        mode: NamespaceMode,
        failures: &mut Vec<Failure>,
    ) {
        let e = &self.expect;
        for (token, expected, actual) in [
            (TokenKind::AccessToken, &e.access_token, &out.access_token),
            (TokenKind::IdToken, &e.id_token, &out.id_token),
        ] {
            let Some(expected) = expected else { continue };
            for (key, want) in expected {
                let got = actual.get(key);
                if got != Some(want) {
                    failures.push(Failure::Claim {
                        token,
                        key: key.clone(),
                        expected: want.clone(),
                        actual: got.cloned(),
                    });
                }
            }
            if e.exact {
                for (key, got) in actual {
                    if !expected.contains_key(key) {
                        failures.push(Failure::UnexpectedClaim {
                            token,
                            key: key.clone(),
                            actual: got.clone(),
                        });
                    }
                }
            }
        }
        for key in &e.absent {
            for (token, map) in [
                (TokenKind::AccessToken, &out.access_token),
                (TokenKind::IdToken, &out.id_token),
            ] {
                if let Some(v) = map.get(key) {
                    failures.push(Failure::PresentClaim {
                        token,
                        key: key.clone(),
                        actual: v.clone(),
                    });
                }
            }
        }
        if let Some(want) = &e.scope {
            let got = out.scope.clone().or(requested);
            let norm = |v: &[String]| {
                let mut v = v.to_vec();
                v.sort();
                v.dedup();
                v
            };
            if got.as_deref().map(norm) != Some(norm(want)) {
                failures.push(Failure::Scope {
                    expected: want.clone(),
                    actual: got,
                });
            }
        }
        if let Some(want) = &e.user {
            check_user(want, &out.user, "", failures);
        }
        let absent: Map<String, Value> = e
            .user_absent
            .iter()
            .map(|k| (k.clone(), Value::Null))
            .collect();
        check_user(&absent, &out.user, "", failures);
        for text in &e.warnings {
            if !out
                .warnings
                .iter()
                .any(|w| w.to_string().contains(text.as_str()))
            {
                failures.push(Failure::MissingWarning {
                    expected: text.clone(),
                });
            }
        }
        if mode == NamespaceMode::Strict {
            for w in &out.warnings {
                let text = w.to_string();
                if !e.warnings.iter().any(|want| text.contains(want.as_str())) {
                    failures.push(Failure::DroppedClaim(w.clone()));
                }
            }
        }
    }
}

/// The field of `value` at `key`: the key as it is, else as a dotted path.
fn field<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(v) = value.get(key) {
        return Some(v);
    }
    if !key.contains('.') {
        return None;
    }
    key.split('.').try_fold(value, |v, part| v.get(part))
}

/// Checks `expect.user`: each key's value, recursing into tables (see
/// [`Expect::user`](super::Expect::user)).
fn check_user(
    want: &Map<String, Value>,
    actual: &Value,
    prefix: &str,
    failures: &mut Vec<Failure>,
) {
    for (key, expected) in want {
        let path = format!("{prefix}{key}");
        let got = field(actual, key).filter(|v| !v.is_null());
        match (expected, got) {
            (Value::Object(inner), Some(got @ Value::Object(_))) if !inner.is_empty() => {
                check_user(inner, got, &format!("{path}."), failures);
            }
            (Value::Null, None) => {}
            (expected, got) if got == Some(expected) => {}
            (expected, got) => failures.push(Failure::User {
                path,
                expected: expected.clone(),
                actual: got.cloned(),
            }),
        }
    }
}

fn denied_suffix(d: &Denied) -> String {
    match d {
        Denied::Any => String::new(),
        Denied::Message(m) => format!(" with a message containing {m:?}"),
    }
}

/// Why a case failed; each names what was expected and what happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// An expected claim is missing or has another value.
    Claim {
        /// The token.
        token: TokenKind,
        /// The claim key.
        key: String,
        /// The expected value.
        expected: Value,
        /// The actual value (`None`: not in the token).
        actual: Option<Value>,
    },
    /// Under `exact = true`, a claim the case did not list.
    UnexpectedClaim {
        /// The token.
        token: TokenKind,
        /// The claim key.
        key: String,
        /// Its value.
        actual: Value,
    },
    /// A claim listed in `absent` is present.
    PresentClaim {
        /// The token.
        token: TokenKind,
        /// The claim key.
        key: String,
        /// Its value.
        actual: Value,
    },
    /// The final scope differs.
    Scope {
        /// The expected scope.
        expected: Vec<String>,
        /// The actual scope (`None`: no rule set one and none was requested).
        actual: Option<Vec<String>>,
    },
    /// The case expected a failure (denial or error) but the run succeeded.
    NotFailed {
        /// What was expected.
        expected: String,
    },
    /// The run was denied, with another message.
    DenialMessage {
        /// The denying rule.
        rule: String,
        /// The expected text.
        expected: String,
        /// The denial's message.
        actual: String,
    },
    /// The run failed, but not the way the case expected.
    WrongFailure {
        /// What was expected.
        expected: String,
        /// The error.
        #[serde(serialize_with = "display")]
        actual: RuleError,
    },
    /// The run failed though the case expected success.
    Unexpected {
        /// The error.
        #[serde(serialize_with = "display")]
        error: RuleError,
    },
    /// No log line contains this text.
    MissingLog {
        /// The expected text.
        expected: String,
    },
    /// No namespace warning contains this text.
    MissingWarning {
        /// The expected text.
        expected: String,
    },
    /// Strict mode: the namespace rule dropped a claim the case did not expect to lose.
    DroppedClaim(Warning),
    /// A field of the user after the run differs from `expect.user`.
    User {
        /// The field, as a dotted path.
        path: String,
        /// The expected value (`null`: absent).
        expected: Value,
        /// The value after the run (`None`: absent).
        actual: Option<Value>,
    },
    /// A metadata update differs from `expect.app_metadata` / `expect.user_metadata`.
    Metadata {
        /// `app_metadata` or `user_metadata`.
        field: &'static str,
        /// The key (`None`: the case expected no update at all).
        key: Option<String>,
        /// The expected value (`null` for a key the case did not list under `exact`).
        expected: Value,
        /// What the rules set (`None`: not updated).
        actual: Option<Value>,
    },
}

fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}
