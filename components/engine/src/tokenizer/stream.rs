//! Incremental detokenization that never splits a UTF-8 sequence.

use super::Tokenizer;
use crate::Result;

/// Turns a stream of token ids into text as they arrive.
///
/// Each token contributes its [`Tokenizer::token_to_piece`] bytes (as llama.cpp's server streams
/// them: no leading-space stripping, no clean-up of spaces). Bytes that end in an incomplete UTF-8
/// sequence are held back until the sequence completes; bytes that can never be valid UTF-8 become
/// U+FFFD at once; [`finish`](Self::finish) turns a dangling partial sequence into U+FFFD. The text
/// emitted over a whole stream equals `String::from_utf8_lossy` of all the pieces concatenated.
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    special: bool,
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// A decoder; `special` renders control tokens' text (as `token_to_piece`'s `special`).
    pub fn new(special: bool) -> Self {
        StreamDecoder {
            special,
            pending: Vec::new(),
        }
    }

    /// Adds token `id`; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        let piece = tokenizer.token_to_piece(id, self.special)?;
        Ok(self.push_bytes(piece))
    }

    /// Adds raw bytes; returns the text that is now complete.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8 by construction.
                    out.push_str(&String::from_utf8_lossy(valid));
                    match e.error_len() {
                        // An invalid sequence: one replacement character, as from_utf8_lossy does.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        // An incomplete sequence at the end: keep it for the next token.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let drop = self.pending.len() - keep;
        self.pending.drain(..drop);
        out
    }

    /// Whether bytes of an incomplete character are being held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: a dangling partial sequence becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}
