//! Stop conditions for generation: end-of-generation tokens, a token budget, and stop strings.
//!
//! Stop strings are matched on the decoded text as it streams. [`StopMatcher`] releases text as
//! soon as it can no longer be part of a stop string and holds back only a suffix that might still
//! begin one (plus an incomplete UTF-8 sequence at the very end, when fed raw bytes). When a stop
//! string completes, the text before it is released and the stop string itself never is — the
//! behaviour of llama.cpp's server (`find_stopping_strings` with partial matches held back).

use crate::{Error, Result};

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token (EOS, EOT, …).
    Eog,
    /// The token budget was reached.
    MaxTokens,
    /// A stop string was produced; the index is its position in the list given to the matcher.
    StopString(usize),
}

/// What one piece of text released.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StopStep {
    /// Text safe to show now.
    pub text: String,
    /// Index of the stop string that completed in this piece, if any.
    pub stop: Option<usize>,
}

/// Streaming stop-string matcher.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text (bytes, possibly ending in an incomplete UTF-8 sequence) not released yet.
    held: Vec<u8>,
    stopped: Option<usize>,
}

impl StopMatcher {
    /// A matcher for `stops`. An empty stop string is an error (it would match before any text).
    pub fn new<I, S>(stops: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let stops: Vec<String> = stops.into_iter().map(Into::into).collect();
        if let Some(i) = stops.iter().position(String::is_empty) {
            return Err(Error::InvalidArgument(format!("stop string {i} is empty")));
        }
        Ok(StopMatcher {
            stops,
            held: Vec::new(),
            stopped: None,
        })
    }

    /// The stop strings.
    pub fn stops(&self) -> &[String] {
        &self.stops
    }

    /// The stop string that ended the stream, if one has.
    pub fn stopped(&self) -> Option<usize> {
        self.stopped
    }

    /// Feeds a piece of text; returns what can be shown now.
    pub fn push(&mut self, piece: &str) -> StopStep {
        self.push_bytes(piece.as_bytes())
    }

    /// Feeds raw bytes of decoded tokens, which may split a UTF-8 character across calls; an
    /// incomplete character at the end is held until its remaining bytes arrive. Invalid UTF-8 is
    /// released as U+FFFD. After a stop, further input is ignored.
    pub fn push_bytes(&mut self, piece: &[u8]) -> StopStep {
        if self.stopped.is_some() {
            return StopStep::default();
        }
        self.held.extend_from_slice(piece);

        // Earliest complete stop string; on a tie at the same position the first listed wins.
        let mut hit: Option<(usize, usize)> = None;
        for (i, s) in self.stops.iter().enumerate() {
            if let Some(pos) = find(&self.held, s.as_bytes())
                && hit.is_none_or(|(p, _)| pos < p)
            {
                hit = Some((pos, i));
            }
        }
        if let Some((pos, i)) = hit {
            self.stopped = Some(i);
            let text = String::from_utf8_lossy(&self.held[..pos]).into_owned();
            self.held.clear();
            return StopStep {
                text,
                stop: Some(i),
            };
        }

        let keep = self.hold_from();
        let text = String::from_utf8_lossy(&self.held[..keep]).into_owned();
        self.held.drain(..keep);
        StopStep { text, stop: None }
    }

    /// Ends the stream: releases whatever is held (no stop string can complete any more).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.held).into_owned();
        self.held.clear();
        text
    }

    /// Where the held-back suffix starts: the earliest position from which the rest of `held` is
    /// a proper prefix of some stop string, or an incomplete UTF-8 sequence at the end.
    fn hold_from(&self) -> usize {
        let n = self.held.len();
        let mut from = n - incomplete_utf8_tail(&self.held);
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        // A held suffix is shorter than the longest stop string (a full one would have matched).
        let start = n.saturating_sub(longest.saturating_sub(1));
        for i in start..n {
            if i >= from {
                break;
            }
            let tail = &self.held[i..];
            if self.stops.iter().any(|s| s.as_bytes().starts_with(tail)) {
                from = i;
                break;
            }
        }
        from
    }
}

/// Byte offset of the first occurrence of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Length of a trailing UTF-8 sequence that has its lead byte but not all its continuation bytes.
fn incomplete_utf8_tail(b: &[u8]) -> usize {
    // Look back at most 3 bytes for a lead byte.
    for k in 1..=b.len().min(3) {
        let c = b[b.len() - k];
        if c & 0xC0 == 0x80 {
            continue; // continuation byte: keep looking for the lead
        }
        let need = match c {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0, // ASCII or an invalid lead: nothing to wait for
        };
        return if k < need { k } else { 0 };
    }
    0
}

/// All stop conditions of one generation: EOG tokens, a token budget and stop strings.
#[derive(Debug, Clone)]
pub struct StopCriteria {
    max_tokens: Option<usize>,
    n_tokens: usize,
    matcher: StopMatcher,
    reason: Option<StopReason>,
}

impl StopCriteria {
    /// `max_tokens`: stop after this many generated tokens (`None`: no limit; `Some(0)` stops before
    /// the first). `stops`: stop strings, as for [`StopMatcher::new`].
    pub fn new<I, S>(max_tokens: Option<usize>, stops: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Ok(StopCriteria {
            max_tokens,
            n_tokens: 0,
            matcher: StopMatcher::new(stops)?,
            reason: if max_tokens == Some(0) {
                Some(StopReason::MaxTokens)
            } else {
                None
            },
        })
    }

    /// Why generation stopped, once it has.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason
    }

    /// Tokens seen so far (EOG excluded).
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// Feeds one generated token and its decoded bytes. `is_eog` tells whether `token` ends
    /// generation (EOS/EOT); such a token's text is not shown. Returns the text to show now and,
    /// when generation must end, the reason; at the end everything held has been released. Once
    /// stopped, further tokens are ignored.
    pub fn on_token(
        &mut self,
        token: u32,
        piece: &[u8],
        is_eog: impl Fn(u32) -> bool,
    ) -> (String, Option<StopReason>) {
        if self.reason.is_some() {
            return (String::new(), self.reason);
        }
        if is_eog(token) {
            self.reason = Some(StopReason::Eog);
            return (self.matcher.finish(), self.reason);
        }
        self.n_tokens += 1;
        let step = self.matcher.push_bytes(piece);
        let mut text = step.text;
        if let Some(i) = step.stop {
            self.reason = Some(StopReason::StopString(i));
        } else if self.max_tokens.is_some_and(|m| self.n_tokens >= m) {
            self.reason = Some(StopReason::MaxTokens);
            text.push_str(&self.matcher.finish());
        }
        (text, self.reason)
    }

    /// Ends generation for an outside reason (e.g. the context is full): releases what is held.
    pub fn finish(&mut self) -> String {
        self.matcher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces`, returns (all emitted text, stop index).
    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<usize>) {
        let mut m = StopMatcher::new(stops.iter().copied()).unwrap();
        let mut out = String::new();
        for p in pieces {
            let s = m.push(p);
            out.push_str(&s.text);
            if s.stop.is_some() {
                return (out, s.stop);
            }
        }
        out.push_str(&m.finish());
        (out, None)
    }

    #[test]
    fn no_stop_passes_everything() {
        assert_eq!(
            run(&[], &["Hello", ", ", "world"]),
            ("Hello, world".into(), None)
        );
        assert_eq!(
            run(&["STOP"], &["Hello", " world"]),
            ("Hello world".into(), None)
        );
    }

    #[test]
    fn stop_in_one_piece() {
        assert_eq!(run(&["\n\n"], &["abc\n\ndef"]), ("abc".into(), Some(0)));
        assert_eq!(run(&["<|im_end|>"], &["<|im_end|>"]), ("".into(), Some(0)));
    }

    #[test]
    fn stop_split_across_pieces() {
        let pieces = ["Sure", "! <|", "im", "_e", "nd|> trailing"];
        assert_eq!(run(&["<|im_end|>"], &pieces), ("Sure! ".into(), Some(0)));
        // Check what was released at each step: nothing of the partial stop leaks early.
        let mut m = StopMatcher::new(["<|im_end|>"]).unwrap();
        assert_eq!(m.push("Sure").text, "Sure");
        assert_eq!(m.push("! <|").text, "! ");
        assert_eq!(m.push("im").text, "");
        assert_eq!(m.push("_e").text, "");
        let s = m.push("nd|> trailing");
        assert_eq!((s.text.as_str(), s.stop), ("", Some(0)));
        // Further input is ignored.
        assert_eq!(m.push("more"), StopStep::default());
        assert_eq!(m.stopped(), Some(0));
    }

    #[test]
    fn partial_match_that_fails_is_released() {
        let mut m = StopMatcher::new(["STOP"]).unwrap();
        assert_eq!(m.push("a ST").text, "a ");
        assert_eq!(m.push("O").text, "");
        // "STOX" can no longer be a stop string: all released.
        assert_eq!(m.push("X").text, "STOX");
        assert_eq!(m.push("ST").text, "");
        assert_eq!(m.finish(), "ST");
    }

    #[test]
    fn overlapping_prefixes() {
        // "aab": after "aa" the suffix "a" is still a possible start, so only one "a" is released.
        let mut m = StopMatcher::new(["aab"]).unwrap();
        assert_eq!(m.push("aa").text, "");
        assert_eq!(m.push("a").text, "a");
        // Held "aa" + "b!": the stop starts at the held text, so nothing more is shown.
        let s = m.push("b!");
        assert_eq!((s.text.as_str(), s.stop), ("", Some(0)));
        // Several stop strings sharing prefixes: the earliest complete one wins.
        assert_eq!(
            run(&["abcd", "bc"], &["xa", "b", "c", "d"]),
            ("xa".into(), Some(1))
        );
        assert_eq!(run(&["abc", "abcd"], &["ab", "cd"]), ("".into(), Some(0)));
        // Same start: first listed wins.
        assert_eq!(run(&["abcd", "abc"], &["abcd"]), ("".into(), Some(0)));
        // A stop string that is a suffix of text plus its own prefix.
        assert_eq!(run(&["ababc"], &["abab", "abc"]), ("ab".into(), Some(0)));
    }

    #[test]
    fn multibyte_utf8() {
        // Stop string with multi-byte characters, split inside a character's bytes.
        let stop = "終わり";
        let text = "日本語の文章終わりです";
        let bytes = text.as_bytes();
        let mut m = StopMatcher::new([stop]).unwrap();
        let mut out = String::new();
        let mut stop_at = None;
        for chunk in bytes.chunks(2) {
            let s = m.push_bytes(chunk);
            // Never a replacement character: split characters are held until complete.
            assert!(!s.text.contains('\u{FFFD}'), "{:?}", s.text);
            out.push_str(&s.text);
            if s.stop.is_some() {
                stop_at = s.stop;
                break;
            }
        }
        assert_eq!((out.as_str(), stop_at), ("日本語の文章", Some(0)));

        // No stop: an emoji split over 4 byte-pieces comes out whole.
        let mut m = StopMatcher::new(["\n"]).unwrap();
        let e = "a🦀b".as_bytes();
        let mut out = String::new();
        for b in e {
            let s = m.push_bytes(std::slice::from_ref(b));
            assert!(!s.text.contains('\u{FFFD}'));
            out.push_str(&s.text);
        }
        out.push_str(&m.finish());
        assert_eq!(out, "a🦀b");

        // A stop string sharing a lead byte with the text: "é" (C3 A9) vs stop "è" (C3 A8).
        assert_eq!(
            run(&["è"], &["café", " crème"]),
            ("café cr".into(), Some(0))
        );

        // Truncated UTF-8 at the very end is released lossily by finish().
        let mut m = StopMatcher::new(["x"]).unwrap();
        assert_eq!(m.push_bytes(&[b'a', 0xE6, 0x97]).text, "a");
        assert_eq!(m.finish(), "\u{FFFD}");
        // Invalid bytes in the middle become U+FFFD without stalling.
        let mut m = StopMatcher::new(["x"]).unwrap();
        assert_eq!(m.push_bytes(&[b'a', 0xFF, b'b']).text, "a\u{FFFD}b");
    }

    #[test]
    fn empty_stop_is_an_error() {
        assert!(matches!(
            StopMatcher::new(["ok", ""]),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn held_text_is_bounded() {
        let mut m = StopMatcher::new(["<|end|>"]).unwrap();
        for _ in 0..1000 {
            m.push("<|en");
            assert!(m.held.len() < "<|end|>".len());
        }
    }

    #[test]
    fn criteria_eog_max_tokens_and_strings() {
        let eog = |t: u32| t == 2;
        // EOG: its text is not shown, held text is flushed.
        let mut c = StopCriteria::new(Some(10), ["END"]).unwrap();
        assert_eq!(c.on_token(5, b"hi E", eog), ("hi ".into(), None));
        assert_eq!(
            c.on_token(2, b"</s>", eog),
            ("E".into(), Some(StopReason::Eog))
        );
        assert_eq!(c.reason(), Some(StopReason::Eog));
        assert_eq!(c.n_tokens(), 1);
        // Ignored afterwards.
        assert_eq!(
            c.on_token(5, b"x", eog),
            (String::new(), Some(StopReason::Eog))
        );

        // Max tokens: the last token's text and anything held are released.
        let mut c = StopCriteria::new(Some(2), ["END"]).unwrap();
        assert_eq!(c.on_token(5, b"a", eog).1, None);
        assert_eq!(
            c.on_token(6, b" EN", eog),
            (" EN".into(), Some(StopReason::MaxTokens))
        );

        // Stop string across tokens.
        let mut c = StopCriteria::new(None, ["\n\n", "END"]).unwrap();
        assert_eq!(c.on_token(5, b"one", eog), ("one".into(), None));
        assert_eq!(c.on_token(5, b" E", eog), (" ".into(), None));
        assert_eq!(
            c.on_token(5, b"ND two", eog),
            ("".into(), Some(StopReason::StopString(1)))
        );

        // max_tokens 0 stops before anything.
        let c = StopCriteria::new(Some(0), Vec::<String>::new()).unwrap();
        assert_eq!(c.reason(), Some(StopReason::MaxTokens));
    }
}
