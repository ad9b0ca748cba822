//! SentencePiece-style BPE over token scores: llama.cpp's `llm_tokenizer_spm_session` (src/llama-vocab.cpp).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::Tokenizer;
use super::unicode::utf8_len;
use crate::Result;

/// A run of the text; merged symbols stay contiguous, so `start..start + n` is always a slice.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    n: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// `llm_bigram_spm`, ordered like its comparator: highest score first, then leftmost.
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        // C++ compares scores with `<` (so -0.0 == 0.0 and NaN ties); equal scores prefer the lower left.
        if self.score < other.score {
            Ordering::Less
        } else if self.score > other.score {
            Ordering::Greater
        } else {
            other.left.cmp(&self.left)
        }
    }
}

/// Tokenizes `text` (spaces already escaped to U+2581) and appends to `out`.
pub(super) fn tokenize(tok: &Tokenizer, text: &str, out: &mut Vec<u32>) -> Result<()> {
    let bytes = text.as_bytes();
    let mut symbols: Vec<Symbol> = Vec::with_capacity(bytes.len());
    let mut offs = 0;
    while offs < bytes.len() {
        let n = utf8_len(bytes[offs]).min(bytes.len() - offs);
        let index = symbols.len();
        symbols.push(Symbol {
            start: offs,
            n,
            prev: index.checked_sub(1),
            next: if offs + n == bytes.len() {
                None
            } else {
                Some(index + 1)
            },
        });
        offs += n;
    }

    let mut queue = BinaryHeap::new();
    let try_add = |queue: &mut BinaryHeap<Bigram>,
                   symbols: &[Symbol],
                   left: Option<usize>,
                   right: Option<usize>| {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let l = symbols[left];
        let size = l.n + symbols[right].n;
        if let Some(id) = text
            .get(l.start..l.start + size)
            .and_then(|s| tok.text_to_token(s))
        {
            queue.push(Bigram {
                left,
                right,
                score: tok.tokens[id as usize].score,
                size,
            });
        }
    };

    for i in 1..symbols.len() {
        try_add(&mut queue, &symbols, Some(i - 1), Some(i));
    }

    while let Some(bigram) = queue.pop() {
        let (l, r) = (symbols[bigram.left], symbols[bigram.right]);
        // One side already merged elsewhere: the bigram is stale.
        if l.n == 0 || r.n == 0 || l.n + r.n != bigram.size {
            continue;
        }
        symbols[bigram.left].n += r.n;
        symbols[bigram.right].n = 0;
        symbols[bigram.left].next = r.next;
        if let Some(next) = r.next {
            symbols[next].prev = Some(bigram.left);
        }
        try_add(
            &mut queue,
            &symbols,
            symbols[bigram.left].prev,
            Some(bigram.left),
        );
        try_add(
            &mut queue,
            &symbols,
            Some(bigram.left),
            symbols[bigram.left].next,
        );
    }

    // `resegment`: merged symbols are always tokens (a bigram is only queued when its text is one), so
    // llama.cpp's `rev_merge` lookup can never succeed; a symbol that is not a token is a single
    // character missing from the vocabulary, emitted as byte tokens.
    let mut i = if symbols.is_empty() { None } else { Some(0) };
    while let Some(idx) = i {
        let s = symbols[idx];
        let piece = &bytes[s.start..s.start + s.n];
        match text
            .get(s.start..s.start + s.n)
            .and_then(|s| tok.text_to_token(s))
        {
            Some(id) => out.push(id),
            None => {
                for &b in piece {
                    out.push(tok.spm_byte_token(b)?);
                }
            }
        }
        i = s.next;
    }
    Ok(())
}
