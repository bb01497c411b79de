//! What a rule author coming from JavaScript (Auth0 rules) most likely meant: the Rhai name of
//! a JavaScript method, and a hint for parse and run-time errors that JavaScript-looking input
//! causes ("rules are Rhai, not JavaScript: …"). Used by the compiler's messages
//! ([`super::compile::compile_one`]), the run-time errors and the static checks ([`super::lint`]).

use std::sync::OnceLock;

use regex::Regex;
use rhai::{LexError, ParseErrorType, Position};

/// JavaScript functions and methods, with what to write in Rhai. Every Rhai name given first
/// after "use" is a registered function (tested below).
pub(crate) const JS_FUNCTIONS: &[(&str, &str)] = &[
    ("indexOf", "use `index_of` (-1 when absent)"),
    ("includes", "use `contains`"),
    ("toLowerCase", "use `to_lower` (`make_lower` changes the string in place)"),
    ("toUpperCase", "use `to_upper` (`make_upper` changes the string in place)"),
    ("startsWith", "use `starts_with`"),
    ("endsWith", "use `ends_with`"),
    ("forEach", "use `for item in array { … }`"),
    ("parseInt", "use `parse_int(text)` (an error when not a number)"),
    ("parseFloat", "use `parse_float(text)`"),
    ("substring", "use `sub_string(start, length)` (a length, not an end index)"),
    ("substr", "use `sub_string(start, length)`"),
    ("slice", "use `extract(start, length)` on an array, `sub_string(start, length)` on a string"),
    ("trimStart", "use `trim` (it changes the string in place and returns `()`)"),
    ("trimEnd", "use `trim` (it changes the string in place and returns `()`)"),
    ("toString", "use `to_string`"),
    ("toFixed", "use `round` (`(x * 100.0).round() / 100.0`) or `to_string`"),
    ("concat", "use `+` (`a + b` joins two arrays or two strings)"),
    ("charAt", "use `get` (`s.get(i)`, `()` when out of range) or `s[i]`"),
    ("charCodeAt", "use `to_int` on the character: `s[i].to_int()`"),
    ("hasOwnProperty", "use `contains` (`map.contains(\"key\")`)"),
    ("every", "use `all` (`array.all(|x| …)`)"),
    ("findIndex", "use `index_of` with a closure (`array.index_of(|x| …)`)"),
    ("isArray", "use `type_of` (`type_of(x) == \"array\"`)"),
    ("replaceAll", "use `replace` (it replaces every match in place and returns `()`)"),
    ("unshift", "use `insert` (`array.insert(0, x)`)"),
    ("isNaN", "use `is_nan` (`x.is_nan()`)"),
    ("test", "use `regex_match(pattern, text)`"),
    ("exec", "use `regex_captures(pattern, text)`"),
    ("stringify", "use `to_json(value)`"),
    ("encodeURIComponent", "use `url_encode(text)`"),
    ("decodeURIComponent", "use `url_decode(text)`"),
    ("btoa", "use `base64_encode(text)`"),
    ("atob", "use `base64_decode(text)`"),
    ("getTime", "use `now()` (unix seconds) or `parse_date(text)`"),
    ("toISOString", "use `format_date(seconds, \"%Y-%m-%dT%H:%M:%SZ\")`"),
    ("updateAppMetadata", "use `update_app_metadata(map)`"),
    ("updateUserMetadata", "use `update_user_metadata(map)`"),
    (
        "callback",
        "use `deny(\"message\")` to refuse the login; otherwise a rule just ends: delete `return callback(null, user, context);`",
    ),
    (
        "require",
        "use `import \"lib/name\" as name;` for shared code under rules/lib/; the helpers (README \"Rule helpers\") replace npm modules",
    ),
    ("setTimeout", "use `http_get` and friends, which block until the answer is in (no timers)"),
];

/// JavaScript properties, with what to write in Rhai.
const JS_PROPERTIES: &[(&str, &str)] = &[(
    "length",
    "use `.len()` (`x[\"length\"]` reads a map key named length)",
)];

/// JavaScript names used as variables (globals, keywords Rhai does not have), with a hint.
const JS_VARIABLES: &[(&str, &str)] = &[
    ("function", FUNCTION_HINT),
    ("console", "`log(a, b)` writes a log line"),
    ("JSON", "`parse_json(text)` and `to_json(value)` replace `JSON.parse` and `JSON.stringify`"),
    ("Math", "`max(a, b)`, `min(a, b)`, `x.abs()`, `x.floor()`, `x.round()` replace `Math.*`"),
    ("Date", "`now()` gives unix seconds; `parse_date(text)` and `format_date(seconds, format)` replace `Date`"),
    ("undefined", "a missing value is `()`: test with `x == ()` or give a default with `x ?? default`"),
    ("typeof", "`type_of(x)` gives the type's name (\"string\", \"map\", \"array\", \"()\", …)"),
    ("Object", "`map.keys()`, `map.values()` and `map.len()` replace `Object.keys` and friends"),
    ("Array", "`type_of(x) == \"array\"` replaces `Array.isArray(x)`; `[]` makes an array"),
    ("String", "`x.to_string()` replaces `String(x)`"),
    ("Number", "`parse_int(text)` and `parse_float(text)` replace `Number(text)`"),
    ("Promise", "there is no async code: `http_get` and friends block until the answer is in"),
    ("require", "shared code goes in rules/lib/ and is imported with `import \"lib/name\" as name;`; the helpers replace npm modules"),
    ("exports", "a rule is a script, not a module: its code runs top to bottom"),
    ("callback", CALLBACK_HINT),
    ("auth0", "`update_app_metadata(map)` and `update_user_metadata(map)` replace `auth0.users.update*Metadata`"),
    ("global", "`cache_get(key)` and `cache_set(key, value, ttl_seconds)` replace Auth0's `global` object"),
    ("request", "`http_get(url)`, `http_post(url, body)` and `http_request(options)` replace the `request` module"),
    ("process", "secrets come from rules.toml's `[configuration]` or `configuration_env`"),
    ("Buffer", "`base64_encode(text)` / `base64_decode(text)` replace `Buffer.from(…).toString(\"base64\")`"),
    ("NaN", "`x.is_nan()` tests a float"),
];

/// Reserved words that are JavaScript syntax, with a hint.
const JS_RESERVED: &[(&str, &str)] = &[
    ("var", "declare variables with `let` (or `const`)"),
    ("null", "a missing value is `()`: write `()` for null or undefined"),
    ("new", "there are no classes: `#{ key: value }` makes a map; `deny(\"message\")` or `throw \"message\"` replaces `new Error(\"message\")`"),
    ("async", "there is no async code: `http_get` and friends block until the answer is in"),
    ("await", "there is no async code: `http_get` and friends block until the answer is in"),
    ("module", "a rule is a script, not a module: its code runs top to bottom"),
    ("default", "a `switch` arm for every other value is `_ => { … }`"),
    ("case", "`switch x { \"a\" => { … }, _ => { … } }` replaces `case`"),
    ("void", "a missing value is `()`"),
    ("match", "`regex_captures(pattern, text)` replaces `text.match(pattern)`"),
];

const FUNCTION_HINT: &str = "declare a function with `fn name(a, b) { … }`; the body of an Auth0 rule goes at the top level of the file, without the `function (user, context, callback) { … }` wrapper";
const CALLBACK_HINT: &str =
    "a rule has no callback: it just ends; `deny(\"message\")` refuses the login";
const ANONYMOUS_HINT: &str =
    "an anonymous function is a closure: `|x| { … }` (`list.some(|ip| ip == context.request.ip)`)";
const ARROW_HINT: &str = "closures are written `|x| x * 2` (or `|x| { … }`), not `x => …`";
const MAP_HINT: &str = "map literals are written `#{ key: value }`, not `{ key: value }`";
const PREFIX: &str = "rules are Rhai, not JavaScript";

/// The hint for a JavaScript function or method name, e.g. "`indexOf` is JavaScript; use
/// `index_of`".
pub(crate) fn js_function(name: &str) -> Option<String> {
    JS_FUNCTIONS
        .iter()
        .find(|(js, _)| *js == name)
        .map(|(js, hint)| format!("`{js}` is JavaScript; {hint}"))
}

/// The hint for a JavaScript property name (`.length`).
pub(crate) fn js_property(name: &str) -> Option<String> {
    JS_PROPERTIES
        .iter()
        .find(|(js, _)| *js == name)
        .map(|(js, hint)| format!("`.{js}` is JavaScript; {hint}"))
}

fn lookup(table: &[(&str, &'static str)], name: &str) -> Option<&'static str> {
    table.iter().find(|(n, _)| *n == name).map(|(_, h)| *h)
}

/// The text of line `line` (1-based) of `source`.
fn line_text(source: &str, line: usize) -> &str {
    source.lines().nth(line.saturating_sub(1)).unwrap_or("")
}

/// Whether `text` matches `pattern`, compiled once into `cell`.
fn matches(cell: &'static OnceLock<Option<Regex>>, pattern: &str, text: &str) -> bool {
    cell.get_or_init(|| Regex::new(pattern).ok())
        .as_ref()
        .is_some_and(|re| re.is_match(text))
}

/// `{ key:` not preceded by `#`: a JavaScript object literal.
fn object_literal(line: &str) -> bool {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    matches(
        &RE,
        r#"(^|[^#\w\s]|\s)\{\s*("[^"]*"|'[^']*'|[A-Za-z_$][\w$]*)\s*:[^:]"#,
        line,
    ) && !line.contains("#{")
}

/// An arrow function whose parameters start at byte `at` of `line` (or just before it).
fn arrow_at(line: &str, at: usize) -> bool {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    let at = at.min(line.len());
    let head = line.get(..at).unwrap_or("");
    let params = |p: usize| {
        head.get(p + 1..).is_some_and(|between| {
            between
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == ',' || c.is_whitespace())
        })
    };
    let start = head.rfind('(').filter(|&p| params(p)).unwrap_or(at);
    line.get(start..).is_some_and(|rest| {
        matches(
            &RE,
            r"^\(?\s*[A-Za-z_$][\w$]*(\s*,\s*[A-Za-z_$][\w$]*)*\s*\)?\s*=>",
            rest,
        )
    })
}

/// The hint for a parse error, when the input looks like JavaScript.
fn parse_hint(kind: &ParseErrorType, source: &str, pos: Position) -> Option<String> {
    let (line_no, column) = (pos.line().unwrap_or(0), pos.position().unwrap_or(1));
    let line = line_text(source, line_no);
    let at = line
        .char_indices()
        .nth(column.saturating_sub(1))
        .map_or(line.len(), |(i, _)| i);
    static FUNCTION: OnceLock<Option<Regex>> = OnceLock::new();
    static FOR: OnceLock<Option<Regex>> = OnceLock::new();
    static REGEX_LITERAL: OnceLock<Option<Regex>> = OnceLock::new();
    static CASE: OnceLock<Option<Regex>> = OnceLock::new();
    let js_function = matches(&FUNCTION, r"(^|[^\w$])function(\s+[\w$]+)?\s*\(", line);
    static ANONYMOUS: OnceLock<Option<Regex>> = OnceLock::new();
    if js_function && matches(&ANONYMOUS, r"[(,=:]\s*function\s*\(", line) {
        return Some(ANONYMOUS_HINT.into());
    }
    let hint: String = match kind {
        ParseErrorType::VariableUndefined(name) => {
            if name == "function" || js_function {
                FUNCTION_HINT.into()
            } else if arrow_at(line, at) {
                ARROW_HINT.into()
            } else if object_literal(line) {
                MAP_HINT.into()
            } else {
                lookup(JS_VARIABLES, name)?.into()
            }
        }
        ParseErrorType::Reserved(word) => lookup(JS_RESERVED, word)?.into(),
        ParseErrorType::BadInput(LexError::MalformedChar(_)) => {
            "strings are written in double quotes, \"…\" ('…' is a single character)".into()
        }
        ParseErrorType::BadInput(LexError::ImproperSymbol(sym, _)) => match sym.as_str() {
            "===" => "write `==` (Rhai never converts types when comparing)".into(),
            "!==" => "write `!=` (Rhai never converts types when comparing)".into(),
            _ => return None,
        },
        ParseErrorType::BadInput(LexError::UnexpectedInput(s))
            if s == "/" && matches(&REGEX_LITERAL, r"(=|\(|,|return)\s*/[^/*]", line) =>
        {
            "there are no regex literals: `regex_match(\"pattern\", text)`, `regex_captures(\"pattern\", text)`".into()
        }
        ParseErrorType::UnknownOperator(op) if op == "++" || op == "--" => {
            format!("write `x {}= 1`", &op[..1])
        }
        ParseErrorType::UnknownOperator(op) if op == "?" => {
            "there is no `c ? a : b`; `if` is an expression: `if c { a } else { b }`".into()
        }
        ParseErrorType::MismatchedType(expected, _) if expected == "a boolean expression" => {
            "`&&`, `||` and `!` take booleans only; for a default value write `x ?? default`, for a missing or false field `x != true`".into()
        }
        ParseErrorType::VariableExpected
            if matches(&FOR, r"(^|[^\w])for\s*\(", line) =>
        {
            "loops are `for item in array { … }` or `for i in 0..n { … }`".into()
        }
        _ if matches(&CASE, r"^\s*(case\s.*:|default\s*:)", line) => {
            "a `switch` arm is `\"value\" => { … }` (and `_ => { … }` for every other value), without `case`, `default:` or `break`".into()
        }
        _ if js_function => FUNCTION_HINT.into(),
        _ if object_literal(line) => MAP_HINT.into(),
        _ if arrow_at(line, at) => ARROW_HINT.into(),
        _ => return None,
    };
    Some(hint)
}

/// The message of a parse error, with "rules are Rhai, not JavaScript: …" when the input
/// looks like JavaScript.
pub(crate) fn parse_message(kind: &ParseErrorType, source: &str, pos: Position) -> String {
    let message = match kind {
        // rhai's own text says "This is not JavaScript!" already; ours says what to write.
        ParseErrorType::BadInput(LexError::ImproperSymbol(sym, _))
            if sym == "===" || sym == "!==" =>
        {
            format!("'{sym}' is not an operator")
        }
        _ => kind.to_string(),
    };
    match parse_hint(kind, source, pos) {
        Some(hint) => format!("{message} ({PREFIX}: {hint})"),
        None => message,
    }
}

/// The hint for a run-time error message, if one applies.
fn runtime_hint(message: &str) -> Option<String> {
    if let Some(sig) = message.strip_prefix("Function not found: ") {
        let (name, args) = sig.split_once(" (").unwrap_or((sig, ""));
        if name == "!" {
            return Some(
                "`!` takes a bool, and this value is `()` (a missing field?): write `x != true` (true when missing or false)".into(),
            );
        }
        if let Some(hint) = js_function(name) {
            return Some(hint);
        }
        if args.starts_with("()") {
            return Some(
                "it was called on `()`, a missing field? (`x?.f()` or `x ?? default`)".into(),
            );
        }
        return None;
    }
    if let Some(rest) = message.strip_prefix("Unknown property '") {
        let name = rest.split('\'').next().unwrap_or("");
        if let Some(hint) = js_property(name) {
            return Some(hint);
        }
        if rest.contains("for type '()'") {
            return Some("the value is `()`, a missing field? read it with `?.`: `a?.b`".into());
        }
        return None;
    }
    if message.starts_with("Data type incorrect: ") && message.ends_with("(expecting bool)") {
        return Some(
            "a condition takes a bool; there is no truthiness: test a field with `x != ()`, a flag with `x == true`, a list with `!x.is_empty()`".into(),
        );
    }
    if let Some(name) = message.strip_prefix("Variable not found: ") {
        let name = name.split_whitespace().next().unwrap_or("");
        if name == "user" || name == "context" {
            return Some(format!(
                "a script function sees only its arguments (and `configuration`): pass `{name}` in, `fn f({name}) {{ … }}` called as `f({name})`"
            ));
        }
    }
    None
}

/// `message` followed by its hint in parentheses, if one applies.
pub(crate) fn with_runtime_hint(message: String) -> String {
    match runtime_hint(&message) {
        Some(hint) => format!("{message} ({hint})"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_error(src: &str) -> String {
        let mut engine = rhai::Engine::new_raw();
        engine.set_strict_variables(true);
        let mut scope = rhai::Scope::new();
        scope.push("user", rhai::Map::new());
        scope.push("context", rhai::Map::new());
        match engine.compile_with_scope(&scope, src) {
            Ok(_) => String::new(),
            Err(e) => parse_message(e.err_type(), src, e.position()),
        }
    }

    #[test]
    fn javascript_parse_errors_get_their_hint() {
        for (src, hint) in [
            (
                "function rule(user, context, callback) {\n}",
                "`fn name(a, b) { … }`",
            ),
            (
                "function (user, context, callback) {\n}",
                "without the `function (user, context, callback) { … }` wrapper",
            ),
            ("let x = 'https://example.com';", "double quotes, \"…\""),
            ("if user.a === 1 { }", "write `==`"),
            ("if user.a !== 1 { }", "write `!=`"),
            ("let f = (x) => x * 2;", "`|x| x * 2`"),
            (
                "let ok = [1].some(function (ip) {\n  return ip == 1;\n});",
                "an anonymous function is a closure: `|x| { … }`",
            ),
            ("let f = [1].map(x => x * 2);", "`|x| x * 2`"),
            ("let x = {a: 1};", "`#{ key: value }`"),
            ("let x = { \"a\": 1 };", "`#{ key: value }`"),
            ("var x = 1;", "`let`"),
            ("let x = null;", "write `()`"),
            ("console.log(1);", "`log(a, b)`"),
            ("let i = 0; i++;", "`x += 1`"),
            ("let x = user.a || \"d\";", "`x ?? default`"),
            ("for (let i = 0; i < 3; i++) { }", "`for i in 0..n { … }`"),
            ("let x = typeof user;", "`type_of(x)`"),
            ("let x = 1 > 0 ? 1 : 2;", "`if c { a } else { b }`"),
            (
                "switch user.a {\n    case \"x\":\n        break;\n}",
                "`\"value\" => { … }`",
            ),
        ] {
            let message = compile_error(src);
            assert!(
                message.contains("rules are Rhai, not JavaScript: ") && message.contains(hint),
                "{src}: {message}"
            );
        }
        assert_eq!(
            compile_error("let x = zzz;"),
            "Undefined variable: zzz",
            "no hint for a plain typo"
        );
    }

    #[test]
    fn runtime_errors_get_their_hint() {
        assert!(with_runtime_hint("Function not found: ! (())".into())
            .ends_with("write `x != true` (true when missing or false))"));
        assert!(with_runtime_hint(
            "Function not found: indexOf ((), &str | ImmutableString | String)".into()
        )
        .contains("`indexOf` is JavaScript; use `index_of`"));
        assert!(with_runtime_hint(
            "Unknown property 'length' - a getter is not registered for type 'string'".into()
        )
        .contains("use `.len()`"));
        assert!(with_runtime_hint("Variable not found: user".into()).contains("pass `user` in"));
        assert!(
            with_runtime_hint("Data type incorrect: array (expecting bool)".into())
                .contains("there is no truthiness: test a field with `x != ()`")
        );
        assert_eq!(
            with_runtime_hint("Division by zero".into()),
            "Division by zero"
        );
    }

    #[test]
    fn every_suggested_rhai_function_is_registered() {
        let engine = super::super::engine::build(&Default::default(), &Default::default());
        let known: std::collections::HashSet<String> = engine
            .collect_fn_metadata(None, |f| Some(f.metadata.name.to_string()), true)
            .into_iter()
            .collect();
        for (js, hint) in JS_FUNCTIONS {
            let Some(rest) = hint.strip_prefix("use `") else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            // Keywords rather than functions.
            if name.is_empty() || ["for", "import", "type_of"].contains(&name.as_str()) {
                continue;
            }
            assert!(known.contains(&name), "{js}: `{name}` is not registered");
        }
    }
}
