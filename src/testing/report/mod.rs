//! Reporters: the runner's text (one line per case, diffs for failures, coverage hint, summary
//! last), a JSON document, JUnit XML for CI systems, and an lcov tracefile of the rules' line
//! coverage (the `geninfo` format of the Linux Test Project's lcov, which CI coverage tools
//! read).

mod json;
mod junit;
mod lcov;
#[cfg(test)]
mod tests;
mod text;

pub use json::render_json;
pub use junit::render_junit;
pub use lcov::render_lcov;
pub(super) use text::render_case;
pub use text::render_text;

/// Whether to color the text output: only on a terminal, and never when `NO_COLOR` is set to a
/// non-empty value (<https://no-color.org>).
pub fn color_enabled(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}
