//! Property tests: no text, and no edit of a valid file, makes the parser panic.

use super::*;
use proptest::prelude::*;

proptest! {
    /// Arbitrary text, and arbitrary edits of a valid file, give a config or an error,
    /// never a panic.
    #[test]
    fn parsing_never_panics(s in "(?s).{0,600}") {
        let _ = NodeConfig::parse(&s);
    }

    #[test]
    fn edited_valid_config_never_panics(at in 0usize..2000, junk in "[ -~\n]{0,12}") {
        let text = include_str!("../../tests/fixtures/mix.toml");
        let at = text.char_indices().map(|(i, _)| i).nth(at % text.len()).unwrap_or(0);
        let edited = format!("{}{}{}", &text[..at], junk, &text[at..]);
        let _ = NodeConfig::parse(&edited);
    }
}
