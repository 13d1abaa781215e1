//! The one error a scenario file can produce: where it went wrong, which field, and why.

/// A scenario that cannot be loaded, located to the line and column of the offending key or value.
///
/// Displays as `{file}:{line}:{column}: {field}: {message}`, e.g.
/// `scenarios/steady.toml:12:1: pool[1].gpus: expected a whole number from 0 to 64, found "eight"`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {field}: {message}")]
pub struct ScenarioError {
    /// The file as the caller named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Dotted path of the field, such as `pool[1].gpus` or `fault[0].fraction`; `toml` for a
    /// syntax error and `file` when the file cannot be read.
    pub field: String,
    pub message: String,
}

/// 1-based line and column (in characters) of a byte offset into `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_are_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 10), (2, 4));
        assert_eq!(line_col(text, 8), (2, 2)); // inside 'é': rounds down to its start
        assert_eq!(line_col(text, 999), (3, 1));
    }
}
