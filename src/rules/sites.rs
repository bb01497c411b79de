//! Static sites of a compiled rule, found by walking its AST (rhai's `internals` feature): the
//! `deny` / `throw` sites, the lines that hold statements, the assignments to a field such as
//! `context.accessToken[KEY]`, and the script functions one by one. Used by the static checks
//! ([`super::lint`]), the coverage ([`super::coverage`]) and the positions of run-time errors
//! found after a rule ran (a claim that has no JSON form, a platform field).

use std::collections::BTreeSet;

use rhai::{ASTFlags, ASTNode, Expr, Position, ScriptFuncDef, Stmt, AST};
use serde::Serialize;

/// 1-based line and column of a position (0 when unknown).
pub(crate) fn line_col(pos: Position) -> (usize, usize) {
    (pos.line().unwrap_or(0), pos.position().unwrap_or(0))
}

/// How a rule denies at a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DenyKind {
    /// `deny(message)`.
    Deny,
    /// `throw value`.
    Throw,
}

impl std::fmt::Display for DenyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DenyKind::Deny => "deny",
            DenyKind::Throw => "throw",
        })
    }
}

/// A `deny(...)` call or a `throw` statement of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DenySite {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// `deny` or `throw`.
    pub kind: DenyKind,
}

/// Visits every node of the rule's top-level statements and of every script function body
/// (closures included); `on_node` gets the path from the statement down to the node.
pub(crate) fn walk(ast: &AST, on_node: &mut dyn FnMut(&[ASTNode]) -> bool) {
    ast.walk(&mut |path: &[ASTNode]| on_node(path));
}

/// Visits the top-level statements only (no function body).
pub(crate) fn walk_top_level(ast: &AST, on_node: &mut dyn FnMut(&[ASTNode]) -> bool) {
    let mut path = Vec::new();
    for stmt in ast.statements() {
        if !stmt.walk(&mut path, &mut |p: &[ASTNode]| on_node(p)) {
            return;
        }
    }
}

/// Visits the body of one script function (found by name and number of parameters).
pub(crate) fn walk_function(
    ast: &AST,
    def: &ScriptFuncDef,
    on_node: &mut dyn FnMut(&[ASTNode]) -> bool,
) {
    let name = def.name.clone();
    let arity = def.params.len();
    // `clone_functions_only_filtered` keeps every function when the AST has no statements
    // (rhai 1.27 `Module::merge_filtered`); `retain_functions` filters.
    let mut only = ast.clone_functions_only();
    only.retain_functions(|_, _, n, params| n == name && params == arity);
    only.walk(&mut |path: &[ASTNode]| on_node(path));
}

/// The node a walk path ends at.
pub(crate) fn last<'a>(path: &'a [ASTNode<'a>]) -> Option<&'a ASTNode<'a>> {
    path.last()
}

/// Every `deny` call and `throw` statement, in source order.
pub fn deny_sites(ast: &AST) -> Vec<DenySite> {
    let mut sites = BTreeSet::new();
    walk(ast, &mut |path| {
        let site = match last(path) {
            Some(ASTNode::Stmt(Stmt::FnCall(f, pos)))
            | Some(ASTNode::Expr(Expr::FnCall(f, pos)))
                if f.name == "deny" && f.namespace.is_empty() =>
            {
                Some((*pos, DenyKind::Deny))
            }
            Some(ASTNode::Stmt(Stmt::Return(_, flags, pos))) if flags.contains(ASTFlags::BREAK) => {
                Some((*pos, DenyKind::Throw))
            }
            _ => None,
        };
        if let Some((pos, kind)) = site {
            let (line, column) = line_col(pos);
            sites.insert(DenySite { line, column, kind });
        }
        true
    });
    sites.into_iter().collect()
}

/// The position of every statement (blocks and no-ops left out), as rhai reports it when the
/// statement runs (an expression statement, `a.push(x);`, by its expression): the lines of
/// these are lcov's instrumented lines.
pub fn statement_positions(ast: &AST) -> Vec<(usize, usize)> {
    let mut positions = BTreeSet::new();
    walk(ast, &mut |path| {
        let pos = match last(path) {
            Some(ASTNode::Stmt(Stmt::Block(..) | Stmt::Noop(..))) => None,
            Some(ASTNode::Stmt(Stmt::Expr(e))) => Some(e.position()),
            Some(ASTNode::Stmt(s)) => Some(s.position()),
            _ => None,
        };
        if let Some((line, column)) = pos.map(line_col).filter(|(l, _)| *l > 0) {
            positions.insert((line, column));
        }
        true
    });
    positions.into_iter().collect()
}

/// One segment of an access chain such as `context.accessToken["k"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// A named property or a literal string index.
    Name(String),
    /// An index computed at run time.
    Computed,
}

/// The segments of an access chain: the root variable, then each property or index
/// (`context.a["b"][i]` is `[context, a, b, ?]`); `None` when the chain does not start at a
/// variable.
pub(crate) fn chain(expr: &Expr) -> Option<Vec<Segment>> {
    // `indexed`: the expression is an index (`[k]`), where a variable is computed.
    fn segment(e: &Expr, indexed: bool) -> Segment {
        match e {
            Expr::Property(p, _) => Segment::Name(p.2.to_string()),
            Expr::StringConstant(s, _) if indexed => Segment::Name(s.to_string()),
            _ => Segment::Computed,
        }
    }
    fn tail(e: &Expr, indexed: bool, out: &mut Vec<Segment>) {
        match e {
            Expr::Dot(b, _, _) => {
                out.push(segment(&b.lhs, indexed));
                tail(&b.rhs, false, out);
            }
            Expr::Index(b, _, _) => {
                out.push(segment(&b.lhs, indexed));
                tail(&b.rhs, true, out);
            }
            other => out.push(segment(other, indexed)),
        }
    }
    match expr {
        Expr::Variable(v, _, _) => Some(vec![Segment::Name(v.1.to_string())]),
        Expr::Dot(b, _, _) | Expr::Index(b, _, _) => {
            let Expr::Variable(v, _, _) = &b.lhs else {
                return None;
            };
            let mut out = vec![Segment::Name(v.1.to_string())];
            tail(&b.rhs, matches!(expr, Expr::Index(..)), &mut out);
            Some(out)
        }
        _ => None,
    }
}

/// An assignment found in a rule: its left-hand chain and the position of the statement.
pub(crate) struct Assignment {
    /// The chain assigned to.
    pub target: Vec<Segment>,
    /// Where the assignment starts (its left-hand side).
    pub pos: Position,
}

/// Every assignment of the rule whose left-hand side is an access chain, in source order.
pub(crate) fn assignments(ast: &AST) -> Vec<Assignment> {
    let mut found = Vec::new();
    walk(ast, &mut |path| {
        if let Some(ASTNode::Stmt(Stmt::Assignment(x))) = last(path) {
            if let Some(target) = chain(&x.1.lhs) {
                found.push(Assignment {
                    target,
                    pos: x.1.lhs.start_position(),
                });
            }
        }
        true
    });
    found.sort_by_key(|a| line_col(a.pos));
    found
}

/// Where the rule most likely set `path` (e.g. `["context", "accessToken", KEY]`): an
/// assignment to exactly that path, else one whose chain has a computed index where the path
/// has a name, else one that replaces a parent of the path (the first in source order of the
/// best kind).
pub(crate) fn assignment_position(ast: &AST, path: &[&str]) -> Option<(usize, usize)> {
    let mut best: Option<(u8, Position)> = None;
    for a in assignments(ast) {
        let rank = match_rank(&a.target, path);
        if let Some(rank) = rank {
            if best.is_none_or(|(r, _)| rank < r) {
                best = Some((rank, a.pos));
            }
        }
    }
    best.map(|(_, pos)| line_col(pos))
}

/// 0: the chain is the path (or goes deeper); 1: it matches with computed indexes; 2: it
/// replaces a parent of the path; `None`: unrelated.
fn match_rank(target: &[Segment], path: &[&str]) -> Option<u8> {
    let mut computed = false;
    for (i, want) in path.iter().enumerate() {
        match target.get(i) {
            None => return (i > 1 || path.len() <= 1).then_some(2),
            Some(Segment::Name(n)) if n == want => {}
            Some(Segment::Computed) if i > 0 => computed = true,
            Some(_) => return None,
        }
    }
    Some(if computed { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(src: &str) -> AST {
        let mut engine = rhai::Engine::new_raw();
        engine.set_optimization_level(rhai::OptimizationLevel::None);
        engine.compile(src).expect("compiles")
    }

    #[test]
    fn deny_and_throw_sites_are_found_in_functions_too_but_not_in_comments() {
        let ast = compile(
            "// this rule throws and denies, says the comment\nfn f(x) {\n  if x { throw \"no\"; }\n}\nif 1 == 2 { deny(\"x\"); }\n",
        );
        let sites = deny_sites(&ast);
        assert_eq!(
            sites,
            vec![
                DenySite {
                    line: 3,
                    column: 10,
                    kind: DenyKind::Throw
                },
                DenySite {
                    line: 5,
                    column: 13,
                    kind: DenyKind::Deny
                },
            ]
        );
        assert!(deny_sites(&compile("// throw deny\nlet x = 1;\n")).is_empty());
    }

    #[test]
    fn assignments_are_located_by_path() {
        let ast = compile(
            "let context = #{accessToken: #{}};\nlet k = \"https://a.example/x\";\ncontext.accessToken[k] = 1;\ncontext.accessToken[\"https://a.example/y\"] = 2;\ncontext.multifactor = #{provider: \"any\"};\n",
        );
        assert_eq!(
            assignment_position(&ast, &["context", "accessToken", "https://a.example/y"]),
            Some((4, 1))
        );
        assert_eq!(
            assignment_position(&ast, &["context", "accessToken", "https://a.example/z"]),
            Some((3, 1))
        );
        assert_eq!(
            assignment_position(&ast, &["context", "multifactor"]),
            Some((5, 1))
        );
        assert_eq!(assignment_position(&ast, &["context", "redirect"]), None);
    }

    #[test]
    fn statement_lines_leave_out_blank_and_comment_lines() {
        let ast = compile("// c\nlet a = 1;\n\nif a == 1 {\n  a = 2;\n}\n");
        let lines: BTreeSet<usize> = statement_positions(&ast).iter().map(|p| p.0).collect();
        assert_eq!(lines.into_iter().collect::<Vec<_>>(), [2, 4, 5]);
        // An expression statement by its expression (`a.push(1)` at the `.`), as rhai runs it.
        let ast = compile("let a = [];\na.push(1);\n");
        assert_eq!(statement_positions(&ast), [(1, 1), (2, 2)]);
    }
}
