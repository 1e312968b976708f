//! Text from the network made safe to show on an operator's terminal.
//!
//! A DHCP hostname (option 12), a vendor class, an installer's callback message: any
//! machine on the boot network chooses these bytes, and they end up in `provd hosts show`,
//! `provd leases list` and the logs. An escape sequence there could rewrite the operator's
//! screen (hide a line, fake a prompt, set the window title). So text is cleaned where it
//! enters provd: every control character (C0, DEL, C1) and every bidirectional override
//! becomes U+FFFD, visibly replaced rather than silently dropped.

use std::borrow::Cow;

/// Unicode's bidirectional embedding, override and isolate controls, which reorder what a
/// terminal shows (CVE-2021-42574, "Trojan Source").
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

fn is_unsafe(c: char) -> bool {
    c.is_control() || is_bidi_control(c)
}

/// `s` with every control or bidirectional-override character replaced by U+FFFD (borrowed
/// when there is none, which is the common case).
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(|c| if is_unsafe(c) { '\u{FFFD}' } else { c }).collect())
}

/// Whether `s` has any character `printable` would replace.
pub fn has_unsafe(s: &str) -> bool {
    s.chars().any(is_unsafe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bidi_overrides_become_visible_replacements() {
        assert!(matches!(printable("web-01.example"), Cow::Borrowed(_)));
        assert_eq!(printable("a\u{1b}]0;owned\u{7}b"), "a\u{FFFD}]0;owned\u{FFFD}b");
        assert_eq!(printable("x\r\ny\u{7f}\u{9b}z"), "x\u{FFFD}\u{FFFD}y\u{FFFD}\u{FFFD}z");
        assert_eq!(printable("admin\u{202E}gpj.exe"), "admin\u{FFFD}gpj.exe");
        assert_eq!(printable("naïve ünïcode"), "naïve ünïcode");
        assert!(has_unsafe("\u{1b}[2J") && !has_unsafe("plain"));
    }
}
