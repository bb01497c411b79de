//! Finding the line of a key in a case file's text, for errors found after parsing (which carry
//! no position).

/// Finds the line where `key` of the case at `index` is written, for errors found after
/// parsing (which carry no position). Looks between the neighbouring cases' `name` lines and
/// takes the occurrence nearest this case's own `name` line.
pub(super) fn locate(text: &str, names: &[String], index: usize, key: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let mut name_lines: Vec<usize> = Vec::with_capacity(names.len());
    let mut from = 0;
    for name in names {
        let found = (from..lines.len())
            .find(|&i| is_key_line(lines[i], "name") && lines[i].contains(name.as_str()));
        let at = found.unwrap_or(from);
        name_lines.push(at);
        from = at + 1;
    }
    let Some(&own) = name_lines.get(index) else {
        return 1;
    };
    if key == "name" {
        return own + 1;
    }
    let lo = if index == 0 {
        0
    } else {
        name_lines[index - 1] + 1
    };
    let hi = name_lines.get(index + 1).copied().unwrap_or(lines.len());
    (lo..hi)
        .filter(|&i| is_key_line(lines[i], key))
        .min_by_key(|&i| (i.abs_diff(own), i < own))
        .map(|i| i + 1)
        .unwrap_or(own + 1)
}

/// Whether a line writes `key` (TOML `key =`, JSON `"key":`, YAML `key:` or `- key:`), also
/// inside an inline table.
pub(super) fn is_key_line(line: &str, key: &str) -> bool {
    let bytes_ok = |rest: &str| {
        let rest = rest.trim_start_matches('"').trim_start();
        rest.starts_with('=') || rest.starts_with(':')
    };
    let mut search = line;
    while let Some(i) = search.find(key) {
        let before = search[..i].trim_end_matches('"');
        let boundary = before
            .chars()
            .last()
            .is_none_or(|c| c.is_whitespace() || matches!(c, '{' | ',' | '-' | '.' | '['));
        if boundary && bytes_ok(&search[i + key.len()..]) {
            return true;
        }
        search = &search[i + key.len()..];
    }
    false
}

/// The line of the `[defaults]` table (or `defaults` key), and of `key` inside it.
pub(super) fn defaults_line(text: &str, key: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == "[defaults]" || is_key_line(l, "defaults"))
        .unwrap_or(0);
    let end = lines
        .iter()
        .skip(start + 1)
        .position(|l| l.trim_start().starts_with("[[") || is_key_line(l, "case"))
        .map_or(lines.len(), |i| start + 1 + i);
    (start..end)
        .find(|&i| is_key_line(lines[i], key))
        .unwrap_or(start)
        + 1
}
