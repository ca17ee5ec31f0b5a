//! Quoting what someone else sent (an id, a header, a Kafka key) inside a message we write:
//! dead-letter details, gRPC statuses, logs. A client can send 100 kB where we expect an id;
//! echoing it back whole makes the message useless and the dead letter (or the response)
//! as large as the input. [`quote`] keeps a short prefix and says how much it left out.
//!
//! Not a sanitiser for HTML or SQL: it only bounds the size and escapes what would make a
//! message ambiguous (quotes, control characters), as `{:?}` does.

/// How many characters of a quoted input messages keep, unless a caller has a reason to
/// keep more or fewer. Ids are far shorter (`compressor-0003.vibration_rms`).
pub const QUOTE_MAX_CHARS: usize = 64;

/// `text` as a Rust string literal (`"pump-1"`, with `"`, `\` and control characters
/// escaped), holding at most its first `max_chars` characters; when it is longer, the
/// literal is followed by how many bytes were cut: `"aaaa…"… (99936 bytes cut)`.
///
/// Cuts on a character boundary, so the prefix is always valid UTF-8. The count is in bytes
/// of the original text, which is what a reader comparing sizes (a Kafka record, a request)
/// needs.
pub fn quote(text: &str, max_chars: usize) -> String {
    let (kept, cut) = prefix(text, max_chars);
    if cut == 0 { format!("{kept:?}") } else { format!("{kept:?}… ({cut} bytes cut)") }
}

/// As [`quote`], without the quotes and escaping: for a message that is already ours but
/// may embed what was sent (a JSON parser's error names the unknown field it saw).
pub fn shorten(text: &str, max_chars: usize) -> String {
    let (kept, cut) = prefix(text, max_chars);
    if cut == 0 { kept.to_owned() } else { format!("{kept}… ({cut} bytes cut)") }
}

/// The first `max_chars` characters of `text`, and how many bytes follow them.
fn prefix(text: &str, max_chars: usize) -> (&str, usize) {
    let end = text.char_indices().nth(max_chars).map_or(text.len(), |(at, _)| at);
    (&text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_quoted_whole() {
        assert_eq!(quote("pump-1", 64), r#""pump-1""#);
        assert_eq!(quote("", 64), r#""""#);
        assert_eq!(quote("abc", 3), r#""abc""#, "exactly max_chars is not cut");
    }

    #[test]
    fn long_text_keeps_a_prefix_and_says_how_many_bytes_were_cut() {
        let long = "a".repeat(100_000);
        let quoted = quote(&long, 8);
        assert_eq!(quoted, r#""aaaaaaaa"… (99992 bytes cut)"#);
        assert!(quote(&long, QUOTE_MAX_CHARS).len() < 100);
    }

    #[test]
    fn cuts_on_character_boundaries_and_counts_bytes() {
        // Each 'é' is two bytes: four characters kept, six more bytes cut.
        assert_eq!(quote("ééééééé", 4), r#""éééé"… (6 bytes cut)"#);
        assert_eq!(quote("🦀🦀", 1), r#""🦀"… (4 bytes cut)"#);
    }

    #[test]
    fn shorten_cuts_the_same_way_without_quoting() {
        assert_eq!(shorten("missing field `sensor_id`", 64), "missing field `sensor_id`");
        assert_eq!(shorten(&"b".repeat(10), 4), "bbbb… (6 bytes cut)");
    }

    #[test]
    fn quotes_and_control_characters_are_escaped() {
        assert_eq!(quote("say \"hi\"\n", 64), r#""say \"hi\"\n""#);
        assert_eq!(quote("a\u{0}b", 64), r#""a\0b""#);
    }
}
