//! Log fields that a client or the provider controls: request paths and query values, header
//! values, claims such as `sub`, error texts (which may quote a provider's answer).
//!
//! tracing's text formatter writes a `%` (Display) field as is, so a `\n` in a provider's
//! `error` parameter used to start a forged log line, and raw ESC bytes reached terminals.
//! Every such value is logged through [`log_safe`], which escapes, while it is written (no
//! allocation):
//!
//! - control characters (C0, DEL, C1) as `\n`, `\r`, `\t` or `\u{1b}`;
//! - the Unicode line and paragraph separators and the bidirectional controls (U+200E,
//!   U+200F, U+202A..U+202E, U+2066..U+2069), which reorder or break what a reader sees;
//! - `\` itself, so that an escape in the output always means an escaped character.
//!
//! A value is cut after [`MAX_CHARS`] characters (marked with `…`): a log line stays a line
//! that log shippers do not split, whatever a client sends.

use std::fmt::{self, Display, Write};

/// Whether text logs get ANSI colour codes: only on a terminal, and never when `NO_COLOR` is
/// set to anything but the empty string (<https://no-color.org>). A pipe, a file or a log
/// shipper gets plain text.
pub fn wants_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Longest logged value, in characters of output.
pub const MAX_CHARS: usize = 2048;

/// `value`, safe to log as a `%` field: see the module documentation.
pub fn log_safe<T: Display>(value: T) -> LogSafe<T> {
    LogSafe(value)
}

/// A value whose `Display` escapes what could forge or disguise a log line.
pub struct LogSafe<T>(T);

impl<T: Display> Display for LogSafe<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Escaping {
            inner: f,
            written: 0,
            cut: false,
        };
        write!(out, "{}", self.0)?;
        if out.cut {
            out.inner.write_char('…')?;
        }
        Ok(())
    }
}

impl<T: Display> fmt::Debug for LogSafe<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Display::fmt(self, f)
    }
}

/// Escapes on the way to the formatter and stops after [`MAX_CHARS`].
struct Escaping<'a, 'b> {
    inner: &'a mut fmt::Formatter<'b>,
    written: usize,
    cut: bool,
}

impl Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.written >= MAX_CHARS {
                self.cut = true;
                return Ok(());
            }
            self.written += 1;
            match c {
                '\\' => self.inner.write_str("\\\\")?,
                '\n' => self.inner.write_str("\\n")?,
                '\r' => self.inner.write_str("\\r")?,
                '\t' => self.inner.write_str("\\t")?,
                c if needs_escape(c) => write!(self.inner, "\\u{{{:x}}}", u32::from(c))?,
                c => self.inner.write_char(c)?,
            }
        }
        Ok(())
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safe(s: &str) -> String {
        log_safe(s).to_string()
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(wants_colour(true, None));
        assert!(wants_colour(true, Some(OsStr::new(""))));
        assert!(!wants_colour(true, Some(OsStr::new("1"))));
        assert!(!wants_colour(false, None));
        assert!(!wants_colour(false, Some(OsStr::new(""))));
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(safe("/a/b?c=d é"), "/a/b?c=d é");
        assert_eq!(safe(""), "");
    }

    #[test]
    fn controls_separators_and_bidi_are_escaped() {
        assert_eq!(
            safe("x\r\nINFO login succeeded sub=admin"),
            "x\\r\\nINFO login succeeded sub=admin"
        );
        assert_eq!(safe("\u{1b}[31mred\u{7}"), "\\u{1b}[31mred\\u{7}");
        assert_eq!(safe("a\u{85}b\u{9b}c\u{7f}"), "a\\u{85}b\\u{9b}c\\u{7f}");
        assert_eq!(safe("\u{2028}\u{202e}evil"), "\\u{2028}\\u{202e}evil");
        assert_eq!(safe("tab\there"), "tab\\there");
        // A backslash in the input cannot pass for an escape.
        assert_eq!(safe("\\n"), "\\\\n");
    }

    #[test]
    fn output_has_no_control_character_whatever_the_input() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let out = log_safe(&all).to_string();
        assert!(!out.chars().any(needs_escape), "{out:?}");
    }

    #[test]
    fn long_values_are_cut() {
        let long = "a".repeat(MAX_CHARS + 10);
        let out = safe(&long);
        assert_eq!(out.chars().count(), MAX_CHARS + 1);
        assert!(out.ends_with('…'));
        assert_eq!(safe(&"a".repeat(MAX_CHARS)), "a".repeat(MAX_CHARS));
    }

    #[test]
    fn any_display_works() {
        let e = std::io::Error::other("disk\nfull");
        assert_eq!(log_safe(&e).to_string(), "disk\\nfull");
        assert_eq!(format!("{:?}", log_safe("a\nb")), "a\\nb");
    }
}
