//! Unit tests of the case-file positions.

use super::locate::{is_key_line, locate};
use super::parse::line_col;

#[test]
fn line_col_counts_from_one() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
}

#[test]
fn key_lines_match_each_format() {
    assert!(is_key_line("user_file = \"x\"", "user_file"));
    assert!(is_key_line("  \"user_file\": \"x\"", "user_file"));
    assert!(is_key_line("- user_file: x", "user_file"));
    assert!(!is_key_line("user = { a = 1 }", "user_file"));
    assert!(!is_key_line("context_file = \"x\"", "file"));
}

#[test]
fn locate_picks_the_key_of_the_right_case() {
    let text =
        "[[case]]\nname = \"a\"\nuser_file = \"x\"\n\n[[case]]\nname = \"b\"\nuser_file = \"y\"\n";
    let names = vec!["a".to_string(), "b".to_string()];
    assert_eq!(locate(text, &names, 0, "user_file"), 3);
    assert_eq!(locate(text, &names, 1, "user_file"), 7);
    assert_eq!(locate(text, &names, 1, "name"), 6);
}
