//! Which rules, lines and `deny`/`throw` sites the cases of a run exercised.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::CaseResult;
use crate::rules::coverage::Hits;
use crate::rules::sites::{DenyKind, DenySite};
#[cfg(doc)]
use crate::rules::RuleSetOptions;
use crate::rules::{RuleError, RuleSet};

/// Rules the cases did not exercise, and the per-rule line table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// Enabled rules no case ran.
    pub unexercised: Vec<String>,
    /// Rules with a `deny` call or a `throw` statement that no case reached.
    pub denial_untested: Vec<String>,
    /// Each enabled rule: the cases that ran it, its lines and its `deny`/`throw` sites.
    pub rules: Vec<RuleCoverage>,
}

/// The coverage of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleCoverage {
    /// The rule.
    pub rule: String,
    /// Its file.
    pub file: PathBuf,
    /// How many cases ran it.
    pub cases: usize,
    /// Each line that holds a statement, with how many times statements on it ran (empty when
    /// the set was built without [`RuleSetOptions::coverage`]).
    pub lines: Vec<LineHits>,
    /// Its `deny` calls and `throw` statements, and whether a case reached each.
    pub sites: Vec<SiteCoverage>,
}

/// How many times the statements of one line ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LineHits {
    /// 1-based line.
    pub line: usize,
    /// Statements run on it, over all cases.
    pub hits: u64,
}

/// A `deny` or `throw` site and whether a case reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SiteCoverage {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// `deny` or `throw`.
    pub kind: DenyKind,
    /// Whether some case reached it.
    pub fired: bool,
}

impl Coverage {
    /// Computes the coverage of the rules of `set` over the results of a run. With a set built
    /// with [`RuleSetOptions::coverage`], a site counts as fired when a case reached its exact
    /// position; without, when the rule denied in some case.
    pub fn compute(set: &RuleSet, results: &[CaseResult]) -> Coverage {
        let mut hits = Hits::default();
        for r in results {
            hits.merge(&r.hits);
        }
        let positions = set.options().coverage;
        let mut cov = Coverage::default();
        for rule in set.rules().iter().filter(|r| r.enabled()) {
            let name = rule.name();
            let cases = results
                .iter()
                .filter(|r| r.rules_run.iter().any(|n| n == name))
                .count();
            if cases == 0 {
                cov.unexercised.push(name.to_owned());
            }
            let denied = results
                .iter()
                .any(|r| matches!(&r.error, Some(RuleError::Denied { rule, .. }) if rule == name));
            let sites: Vec<SiteCoverage> = rule
                .deny_sites()
                .into_iter()
                .map(|DenySite { line, column, kind }| SiteCoverage {
                    line,
                    column,
                    kind,
                    fired: if positions {
                        hits.reached(name, line, column)
                    } else {
                        denied
                    },
                })
                .collect();
            if sites.iter().any(|s| !s.fired) {
                cov.denial_untested.push(name.to_owned());
            }
            let lines = if positions {
                // A line ran as many times as the statement on it that ran most.
                let mut lines: BTreeMap<usize, u64> = Default::default();
                for (line, column) in rule.statement_positions() {
                    let slot = lines.entry(line).or_default();
                    *slot = (*slot).max(hits.count(name, line, column));
                }
                lines
                    .into_iter()
                    .map(|(line, hits)| LineHits { line, hits })
                    .collect()
            } else {
                Vec::new()
            };
            cov.rules.push(RuleCoverage {
                rule: name.to_owned(),
                file: rule.path().to_path_buf(),
                cases,
                lines,
                sites,
            });
        }
        cov
    }

    /// True when there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.unexercised.is_empty() && self.denial_untested.is_empty()
    }

    /// The `deny`/`throw` sites of `rule` no case reached.
    pub fn untested_sites(&self, rule: &str) -> Vec<SiteCoverage> {
        self.rules
            .iter()
            .filter(|r| r.rule == rule)
            .flat_map(|r| r.sites.iter().filter(|s| !s.fired).copied())
            .collect()
    }
}
