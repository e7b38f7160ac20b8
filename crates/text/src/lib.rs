//! `engine-text`: text from the wire, cut and shown safely.
//!
//! Input-derived text is any UTF-8 (or, as bytes, none at all); cutting it at
//! a byte offset inside a character panics, and the engine aborts on a panic.
//! Every function here cuts on a character boundary only, so none can panic,
//! whatever the input and whatever the bound. See the README for the rule
//! that makes these the only way text is cut in the workspace.

use std::borrow::Cow;

/// The largest index `<= max_bytes` that is a character boundary of `s`.
fn boundary(s: &str, max_bytes: usize) -> usize {
    if max_bytes >= s.len() {
        return s.len();
    }
    // A UTF-8 character is at most 4 bytes, so a boundary is at most 3 back.
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// The longest prefix of `s` of at most `max_bytes` bytes that ends on a
/// character boundary (`""` when the first character is longer).
pub fn clip(s: &str, max_bytes: usize) -> &str {
    s.get(..boundary(s, max_bytes)).unwrap_or_default()
}

/// Cuts `s` in place to [`clip`]'s prefix.
pub fn clip_string(s: &mut String, max_bytes: usize) {
    let end = boundary(s, max_bytes);
    // `end` is a character boundary (or the length), so this cannot panic.
    #[allow(clippy::disallowed_methods)]
    s.truncate(end);
}

/// `bytes` (maybe not UTF-8) as text of at most `max_bytes` bytes: invalid
/// sequences become U+FFFD, and the cut falls on a character boundary.
pub fn clip_lossy(bytes: &[u8], max_bytes: usize) -> Cow<'_, str> {
    // Decode a little more than the bound, so a character cut by the window
    // becomes one replacement character past the bound, then clipped away.
    let window = bytes.get(..max_bytes.saturating_add(4)).unwrap_or(bytes);
    match String::from_utf8_lossy(window) {
        Cow::Borrowed(s) => Cow::Borrowed(clip(s, max_bytes)),
        Cow::Owned(mut s) => {
            clip_string(&mut s, max_bytes);
            Cow::Owned(s)
        }
    }
}

/// The ellipsis [`shown`] appends when it cut something.
pub const ELLIPSIS: &str = "…";

/// `s` for a message: at most `max_bytes` of it, followed by [`ELLIPSIS`]
/// when something was cut (so at most `max_bytes + 3` bytes in all).
pub fn shown(s: &str, max_bytes: usize) -> Cow<'_, str> {
    let c = clip(s, max_bytes);
    if c.len() == s.len() {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("{c}{ELLIPSIS}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cuts_before_a_character_it_would_split() {
        let s = "é".repeat(100); // 200 bytes, boundaries at even offsets
        assert_eq!(clip(&s, 199).len(), 198);
        assert_eq!(clip(&s, 200), s);
        assert_eq!(clip("🦀", 3), "");
        assert_eq!(clip("a🦀", 4), "a");
        let mut owned = s.clone();
        clip_string(&mut owned, 7);
        assert_eq!(owned, "ééé");
        assert_eq!(shown(&s, 5), "éé…");
        assert_eq!(shown("short", 5), "short");
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(clip_lossy(b"ab\xffcd", 100), "ab\u{fffd}cd");
        // The window cuts "é" (0xC3 0xA9) in half: the half is not shown.
        assert_eq!(clip_lossy("aé".as_bytes(), 2), "a");
        assert_eq!(clip_lossy(b"", 0), "");
    }

    proptest! {
        #[test]
        fn clip_never_panics_and_is_a_bounded_prefix(s in "\\PC{0,40}", max in 0usize..200) {
            let c = clip(&s, max);
            prop_assert!(c.len() <= max);
            prop_assert!(s.starts_with(c));
            // The longest such prefix: one more character would pass the bound.
            if let Some(next) = s.get(c.len()..).and_then(|r| r.chars().next()) {
                prop_assert!(c.len() + next.len_utf8() > max);
            }
            let shown = shown(&s, max);
            prop_assert!(shown.len() <= max + ELLIPSIS.len());
        }

        #[test]
        fn clip_lossy_never_panics_and_is_bounded(b in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..80) {
            let c = clip_lossy(&b, max);
            prop_assert!(c.len() <= max);
        }
    }
}
