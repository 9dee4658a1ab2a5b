use super::*;

#[test]
fn positions_parse() {
    assert_eq!(parse_position("12"), Some(Position::after(12)));
    assert_eq!(
        parse_position("12.10.3"),
        Some(Position {
            seq: 12,
            transient: Some((10, 3))
        })
    );
    assert_eq!(parse_position("x"), None);
    assert_eq!(parse_position("1.2"), None);
    assert_eq!(parse_position("1.2.3.4"), None);
    // Client-supplied: no sign, no overflow, a turn that starts before
    // the position.
    for bad in [
        "",
        "-1",
        "+1",
        " 1",
        "9223372036854775808",
        "99999999999999999999999",
        "12.-1.3",
        "12.0.3",
        "12.13.3",
        "12.10.-3",
        "12.10.18446744073709551616",
        "12..3",
        "12.10.",
    ] {
        assert_eq!(parse_position(bad), None, "{bad:?}");
    }
    assert_eq!(
        parse_position("9223372036854775807.9223372036854775807.18446744073709551615"),
        Some(Position {
            seq: i64::MAX,
            transient: Some((i64::MAX, u64::MAX))
        })
    );
}
