//! Unit tests of the LLM config helpers.

use super::sql::{referrer_pattern, referrers};

#[test]
fn referrer_patterns_escape_like_wildcards() {
    assert_eq!(referrer_pattern("abc-1"), "%\"abc-1\"%");
    assert_eq!(referrer_pattern("a%b_c"), "%\"a\\%b\\_c\"%");
    assert_eq!(referrer_pattern("a\"b"), "%\"a\\\\\"b\"%");
}

#[test]
fn referrers_check_values_exactly() {
    let rows = vec![
        ("c1".to_owned(), Some("x".to_owned()), "{}".to_owned()),
        ("c2".to_owned(), None, r#"{"title":"x"}"#.to_owned()),
        ("c3".to_owned(), None, r#"{"x":"y"}"#.to_owned()),
        (
            "c4".to_owned(),
            Some("xy".to_owned()),
            r#"{"chat":"xy"}"#.to_owned(),
        ),
    ];
    assert_eq!(referrers("x", rows), vec!["c1", "c2"]);
}
