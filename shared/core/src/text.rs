//! Text that must cross services with rules of their own. SQS accepts only the characters
//! `#x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF` in a message body and its
//! attributes; JSON written by this runtime escapes everything else, so any value an atom holds can
//! travel without loss (`\u{fffe}` comes back as U+FFFE when the body is parsed).

use serde::Serialize;
use std::io;

/// True if SQS accepts `c` as is in a message.
pub fn sqs_accepts(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `text` with every character SQS refuses replaced by U+FFFD, for free text that is not JSON
/// (a reason in a message attribute).
pub fn sqs_safe_text(text: &str) -> String {
    text.chars()
        .map(|c| if sqs_accepts(c) { c } else { '\u{FFFD}' })
        .collect()
}

/// A JSON formatter that writes `\uXXXX` for the characters SQS refuses. serde_json already
/// escapes control characters; U+FFFE and U+FFFF (valid Unicode, refused by SQS) are left to this.
#[derive(Clone, Copy, Debug, Default)]
pub struct SqsSafeJson;

impl serde_json::ser::Formatter for SqsSafeJson {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut rest = fragment;
        while let Some((at, c)) = rest.char_indices().find(|(_, c)| !sqs_accepts(*c)) {
            writer.write_all(&rest.as_bytes()[..at])?;
            write!(writer, "\\u{:04x}", u32::from(c))?;
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }
}

/// Writes `value` as JSON that SQS accepts.
pub fn write_json<W: io::Write>(writer: W, value: &impl Serialize) -> serde_json::Result<()> {
    let mut serializer = serde_json::Serializer::with_formatter(writer, SqsSafeJson);
    value.serialize(&mut serializer)
}

/// `value` as JSON that SQS accepts.
pub fn to_json(value: &impl Serialize) -> String {
    let mut out = Vec::new();
    // Plain data with string keys cannot fail to serialise, and the output is UTF-8.
    let _ = write_json(&mut out, value);
    String::from_utf8(out).unwrap_or_default()
}

/// The length of [`to_json`] without building the string.
pub fn json_len(value: &impl Serialize) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    let _ = write_json(&mut counter, value);
    counter.0
}

/// The first `max` bytes of `text`, cut at a character boundary.
pub fn truncate_at_char(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn json_escapes_what_sqs_refuses_and_round_trips() {
        let value = json!({"text": "a\u{fffe}b\u{ffff}c\u{0}d\u{1F600}", "k\u{fffe}": 1});
        let text = to_json(&value);
        assert!(text.chars().all(sqs_accepts), "{text}");
        assert!(
            text.contains("\\ufffe") && text.contains("\\uffff"),
            "{text}"
        );
        assert_eq!(text.len(), json_len(&value));
        let back: Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back, value);
    }

    #[test]
    fn free_text_is_made_safe_and_cut_at_a_boundary() {
        assert_eq!(sqs_safe_text("ok\u{ffff}\u{7}"), "ok\u{FFFD}\u{FFFD}");
        assert_eq!(truncate_at_char("héllo", 2), "h");
        assert_eq!(truncate_at_char("héllo", 3), "hé");
    }
}
