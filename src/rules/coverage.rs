//! What the rules executed, for the test runner's coverage: how many times each statement and
//! expression was reached, by position, and so how many times each line ran; a `deny` or
//! `throw` site is known to have fired by its position, not by a text search.
//!
//! A rule set built with [`super::RuleSetOptions::coverage`] registers a rhai debugger that
//! steps into every node; [`collect`] gathers what one run reached on this thread. Sets built
//! without it (the token server's) carry no debugger and pay nothing.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use rhai::debugger::{DebuggerCommand, DebuggerEvent};
use rhai::{ASTNode, Engine, Stmt};

use super::sites::line_col;

/// What one or more runs reached, per rule (the rule's name is its AST's source).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hits {
    /// How many times each node (statement or expression) was reached, by (line, column), per
    /// rule. rhai reports a few expressions twice per evaluation (an index `a[k]`), so line
    /// counts come from the statements' own positions ([`super::sites::statement_positions`]).
    pub positions: HashMap<String, BTreeMap<(usize, usize), u64>>,
}

impl Hits {
    /// Adds what `other` reached.
    pub fn merge(&mut self, other: &Hits) {
        for (rule, positions) in &other.positions {
            let mine = self.positions.entry(rule.clone()).or_default();
            for (pos, n) in positions {
                *mine.entry(*pos).or_default() += n;
            }
        }
    }

    /// Whether the rule reached the node at `line`:`column`.
    pub fn reached(&self, rule: &str, line: usize, column: usize) -> bool {
        self.count(rule, line, column) > 0
    }

    /// How many times the rule reached the node at `line`:`column`.
    pub fn count(&self, rule: &str, line: usize, column: usize) -> u64 {
        self.positions
            .get(rule)
            .and_then(|p| p.get(&(line, column)))
            .copied()
            .unwrap_or(0)
    }
}

thread_local! {
    /// The hits of the run being collected on this thread, if any.
    static ACTIVE: RefCell<Option<Hits>> = const { RefCell::new(None) };
}

/// Runs `f` and returns what the rules reached meanwhile on this thread (nothing unless the
/// set was built with coverage).
pub fn collect<T>(f: impl FnOnce() -> T) -> (T, Hits) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            ACTIVE.with(|a| a.borrow_mut().take());
        }
    }
    ACTIVE.with(|a| *a.borrow_mut() = Some(Hits::default()));
    let reset = Reset;
    let out = f();
    let hits = ACTIVE.with(|a| a.borrow_mut().take()).unwrap_or_default();
    drop(reset);
    (out, hits)
}

fn record(source: Option<&str>, node: &ASTNode) {
    let Some(rule) = source else { return };
    // rhai reports an expression statement (`a.push(x);`) as its expression.
    let pos = match node {
        ASTNode::Stmt(Stmt::Block(..) | Stmt::Noop(..)) => return,
        ASTNode::Stmt(s) => s.position(),
        ASTNode::Expr(e) => e.position(),
        _ => return,
    };
    let (line, column) = line_col(pos);
    if line == 0 {
        return;
    }
    ACTIVE.with(|a| {
        let mut a = a.borrow_mut();
        let Some(hits) = a.as_mut() else { return };
        *hits
            .positions
            .entry(rule.to_owned())
            .or_default()
            .entry((line, column))
            .or_default() += 1;
    });
}

/// Registers the debugger that records every statement and call reached.
pub(crate) fn register(engine: &mut Engine) {
    // `register_debugger` is marked volatile by rhai (not deprecated); Cargo.lock pins the
    // version and tests/it/rules_coverage.rs proves the behaviour.
    #[allow(deprecated)]
    engine.register_debugger(
        |_, debugger| debugger,
        |_, event, node, source, _| {
            if matches!(event, DebuggerEvent::Start | DebuggerEvent::Step) {
                record(source, &node);
            }
            Ok(DebuggerCommand::StepInto)
        },
    );
}
