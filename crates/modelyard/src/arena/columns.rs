//! Side-by-side columns for `modelyard arena`: the answers laid out in
//! equal columns (word-wrapped, each headed by its model, with its tokens
//! and times under it), and the choice between columns and one answer after
//! another. Widths are counted in `char`s (a CJK or emoji character counts
//! as one, whatever its display width), never in bytes.

/// The narrowest column worth printing side by side, in terminal columns.
pub(crate) const MIN_COLUMN: usize = 40;

/// What stands between two columns.
const GAP: &str = " │ ";

/// Spaces a tab becomes.
const TAB: &str = "    ";

/// One model's column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    /// The heading: the model id.
    pub header: String,
    /// The answer (or why it failed); line breaks are kept.
    pub body: String,
    /// Lines under the answer: tokens, time to first token, total time.
    pub footer: Vec<String>,
}

/// How `--columns` / `--no-columns` were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnsFlag {
    /// Columns when stdout is a terminal wide enough.
    Auto,
    /// `--columns`: columns whatever stdout is.
    Always,
    /// `--no-columns`: one answer after another.
    Never,
}

/// How a run is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Each answer under a `== model ==` header as it ends.
    Sequential,
    /// Side by side in `width` terminal columns at the end; with `live`, a
    /// progress line per model (redrawn in place) while they stream.
    Columns {
        /// Total width in terminal columns.
        width: usize,
        /// Whether stdout is a terminal (the progress lines need one).
        live: bool,
    },
}

/// The layout of a run of `models` models: `terminal` says whether stdout
/// is a terminal, `width` its width (from `COLUMNS` or the terminal) when
/// known. Automatic columns need a terminal of at least [`MIN_COLUMN`]
/// columns per model; `--columns` without a known width assumes that much.
pub(crate) fn choose(
    flag: ColumnsFlag,
    models: usize,
    terminal: bool,
    width: Option<usize>,
) -> Layout {
    match flag {
        ColumnsFlag::Never => Layout::Sequential,
        ColumnsFlag::Always => Layout::Columns {
            width: width.unwrap_or(models.max(1) * MIN_COLUMN),
            live: terminal,
        },
        ColumnsFlag::Auto => match width {
            Some(width) if terminal && models > 0 && width >= models * MIN_COLUMN => {
                Layout::Columns { width, live: true }
            }
            _ => Layout::Sequential,
        },
    }
}

/// `columns` side by side in `width` terminal columns: each column
/// `(width - gaps) / n` chars wide (at least 1), separated by ` │ `; the
/// headers, a rule, the bodies, a rule and the footers, each section as
/// tall as its tallest cell (shorter cells padded with blank lines). Lines
/// carry no trailing spaces.
pub(crate) fn layout(columns: &[Column], width: usize) -> Vec<String> {
    if columns.is_empty() {
        return Vec::new();
    }
    let n = columns.len();
    let gaps = (n - 1) * GAP.chars().count();
    let cell = (width.saturating_sub(gaps) / n).max(1);
    let mut lines = Vec::new();
    let section = |cells: Vec<Vec<String>>, lines: &mut Vec<String>| {
        let height = cells.iter().map(Vec::len).max().unwrap_or(0);
        for row in 0..height {
            let parts: Vec<String> = cells
                .iter()
                .map(|c| pad(c.get(row).map(String::as_str).unwrap_or(""), cell))
                .collect();
            lines.push(parts.join(GAP).trim_end().to_owned());
        }
    };
    let rule = || vec![vec!["─".repeat(cell)]; n];
    section(
        columns.iter().map(|c| wrap(&c.header, cell)).collect(),
        &mut lines,
    );
    section(rule(), &mut lines);
    section(
        columns.iter().map(|c| wrap(&c.body, cell)).collect(),
        &mut lines,
    );
    section(rule(), &mut lines);
    section(
        columns
            .iter()
            .map(|c| c.footer.iter().flat_map(|f| wrap(f, cell)).collect())
            .collect(),
        &mut lines,
    );
    lines
}

/// `text` padded with spaces to `width` chars.
fn pad(text: &str, width: usize) -> String {
    let len = text.chars().count();
    let mut out = String::with_capacity(text.len() + width.saturating_sub(len));
    out.push_str(text);
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(len)));
    out
}

/// `text` word-wrapped to lines of at most `width` chars (at least 1): its
/// line breaks are kept, a word longer than a line is split, spaces inside a
/// line are kept (indentation too); tabs become four spaces, carriage
/// returns and other control characters are dropped (no escape sequence
/// from a model reaches the terminal).
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let clean: String = paragraph
            .replace('\t', TAB)
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        let mut line = String::new();
        let mut len = 0usize;
        let mut fresh = true; // nothing placed on this line yet
        for word in clean.split(' ') {
            let mut word_len = word.chars().count();
            if !fresh && len + 1 + word_len <= width {
                line.push(' ');
                line.push_str(word);
                len += 1 + word_len;
                continue;
            }
            if !fresh {
                // Spaces before a break are not shown.
                line.truncate(line.trim_end_matches(' ').len());
                lines.push(std::mem::take(&mut line));
                len = 0;
                if word.is_empty() {
                    // A space at a break: the break stands for it.
                    fresh = true;
                    continue;
                }
            }
            // `word` starts this line, split when it is longer than one.
            let mut rest = word;
            while word_len > width {
                let cut = rest
                    .char_indices()
                    .nth(width)
                    .map_or(rest.len(), |(i, _)| i);
                lines.push(rest[..cut].to_owned());
                rest = &rest[cut..];
                word_len -= width;
            }
            line.push_str(rest);
            len = word_len;
            fresh = false;
        }
        lines.push(line);
    }
    lines
}

/// One model's progress line (while streaming), cut to `width` chars.
pub(crate) fn progress_line(model: &str, state: &str, chars: usize, width: usize) -> String {
    let line = format!("{model}  {state} · {chars} chars");
    line.chars().take(width.max(1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(header: &str, body: &str, footer: &[&str]) -> Column {
        Column {
            header: header.to_owned(),
            body: body.to_owned(),
            footer: footer.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn wrap_breaks_at_spaces_and_keeps_line_breaks() {
        assert_eq!(wrap("one two three four", 9), ["one two", "three", "four"]);
        assert_eq!(wrap("a\n\nb", 5), ["a", "", "b"]);
        assert_eq!(wrap("", 5), [""]);
        // Indentation survives; a space at a break does not start a line.
        assert_eq!(wrap("    code here", 20), ["    code here"]);
        assert_eq!(wrap("abc  def", 4), ["abc", "def"]);
    }

    #[test]
    fn wrap_splits_a_word_longer_than_the_line() {
        assert_eq!(wrap("abcdefghij xy", 4), ["abcd", "efgh", "ij", "xy"]);
        assert_eq!(wrap("abcdefgh", 4), ["abcd", "efgh"]);
        assert_eq!(wrap("ab", 0), ["a", "b"], "width 0 counts as 1");
    }

    #[test]
    fn wrap_counts_chars_not_bytes() {
        // Three 3-byte chars per word: fits 7 chars, not 7 bytes.
        assert_eq!(wrap("日本語 日本語 日本語", 7), ["日本語 日本語", "日本語"]);
        assert_eq!(wrap("éééééé", 4), ["éééé", "éé"]);
        assert_eq!(wrap("🦀🦀🦀", 2), ["🦀🦀", "🦀"]);
    }

    #[test]
    fn wrap_drops_control_characters_and_expands_tabs() {
        assert_eq!(wrap("a\tb", 20), ["a    b"]);
        assert_eq!(wrap("red\u{1b}[31m\r", 20), ["red[31m"]);
    }

    #[test]
    fn columns_sit_side_by_side_padded_to_the_tallest() {
        let lines = layout(
            &[
                column(
                    "m/a",
                    "one two three four five",
                    &["2 + 5 tokens", "total 9 ms"],
                ),
                column("m/b", "short", &["1 + 1 tokens"]),
            ],
            23, // (23 - 3) / 2 = 10 chars per column
        );
        assert_eq!(
            lines,
            [
                "m/a        │ m/b",
                "────────── │ ──────────",
                "one two    │ short",
                "three four │",
                "five       │",
                "────────── │ ──────────",
                "2 + 5      │ 1 + 1",
                "tokens     │ tokens",
                "total 9 ms │",
            ]
        );
    }

    #[test]
    fn columns_align_by_chars_with_wide_characters() {
        let lines = layout(
            &[column("日本", "語語語 語", &[]), column("b", "x", &[])],
            13,
        );
        // 5 chars per column: the second column starts at char 8 on every row.
        for line in &lines {
            let chars: Vec<char> = line.chars().collect();
            assert_eq!(
                chars.get(5..8).map(|c| c.iter().collect::<String>()),
                Some(" │ ".into()),
                "{line:?}"
            );
        }
        assert_eq!(lines[2], "語語語 語 │ x");
    }

    #[test]
    fn automatic_columns_need_a_wide_terminal() {
        use ColumnsFlag::*;
        let columns = |width| Layout::Columns { width, live: true };
        assert_eq!(choose(Auto, 2, true, Some(80)), columns(80));
        assert_eq!(choose(Auto, 2, true, Some(79)), Layout::Sequential);
        assert_eq!(choose(Auto, 3, true, Some(100)), Layout::Sequential);
        assert_eq!(
            choose(Auto, 2, false, Some(200)),
            Layout::Sequential,
            "not a terminal"
        );
        assert_eq!(
            choose(Auto, 2, true, None),
            Layout::Sequential,
            "width unknown"
        );
        assert_eq!(choose(Never, 2, true, Some(200)), Layout::Sequential);
        assert_eq!(
            choose(Always, 2, false, Some(60)),
            Layout::Columns {
                width: 60,
                live: false
            }
        );
        assert_eq!(
            choose(Always, 3, false, None),
            Layout::Columns {
                width: 120,
                live: false
            }
        );
    }

    #[test]
    fn a_progress_line_fits_its_width() {
        assert_eq!(
            progress_line("m/a", "streaming", 42, 80),
            "m/a  streaming · 42 chars"
        );
        assert_eq!(progress_line("m/a", "streaming", 42, 6), "m/a  s");
    }
}
