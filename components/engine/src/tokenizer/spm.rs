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
///
/// llama.cpp runs one priority queue over the whole fragment. Between two adjacent characters that
/// are adjacent in no token, no merge can ever happen (every merged symbol is a token), so merges on
/// either side never interact and their relative order is the same as in one global queue: the text
/// is cut there and each piece runs on its own small queue, with identical results.
pub(super) fn tokenize(tok: &Tokenizer, text: &str, out: &mut Vec<u32>) -> Result<()> {
    let mut session = Session::default();
    let mut seg_start = 0;
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        if let Some(p) = prev
            && !tok.spm_pairs.contains(&pair_key(p, c))
        {
            session.run(tok, &text[seg_start..i], out)?;
            seg_start = i;
        }
        prev = Some(c);
    }
    session.run(tok, &text[seg_start..], out)
}

/// The key of two adjacent characters in [`Tokenizer::spm_pairs`].
#[inline]
pub(super) fn pair_key(a: char, b: char) -> u64 {
    (u64::from(u32::from(a)) << 32) | u64::from(u32::from(b))
}

#[derive(Default)]
struct Session {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Bigram>,
    scores: Vec<Option<f32>>,
}

/// Pieces of at most this many characters merge by scanning instead of through a queue.
const SMALL: usize = 48;

/// The score of the token spelled by symbols `l` and `r` together, if there is one.
#[inline]
fn pair_score(tok: &Tokenizer, text: &str, l: &Symbol, r: &Symbol) -> Option<f32> {
    text.get(l.start..l.start + l.n + r.n)
        .and_then(|s| tok.text_to_token(s))
        .map(|id| tok.tokens[id as usize].score)
}

/// Merging by repeated search for the best adjacent pair (short pieces). The queue's next valid
/// entry is always the current adjacent pair with the highest score, leftmost on ties: an entry is
/// stale exactly when one of its symbols has changed, and symbols only change by merging.
fn merge_scan(
    tok: &Tokenizer,
    text: &str,
    symbols: &mut Vec<Symbol>,
    scores: &mut Vec<Option<f32>>,
) {
    scores.clear();
    scores.extend(
        symbols
            .windows(2)
            .map(|w| pair_score(tok, text, &w[0], &w[1])),
    );
    loop {
        let mut best: Option<(usize, f32)> = None;
        for (i, s) in scores.iter().enumerate() {
            if let Some(s) = *s {
                // Strictly greater: on equal scores (as C++ `<` sees them) the leftmost wins.
                if best.is_none_or(|(_, b)| s > b) {
                    best = Some((i, s));
                }
            }
        }
        let Some((i, _)) = best else { break };
        symbols[i].n += symbols[i + 1].n;
        symbols.remove(i + 1);
        scores.remove(i);
        if i > 0 {
            scores[i - 1] = pair_score(tok, text, &symbols[i - 1], &symbols[i]);
        }
        if i < scores.len() {
            scores[i] = pair_score(tok, text, &symbols[i], &symbols[i + 1]);
        }
    }
    // The list is contiguous now: relink it for the output walk.
    let len = symbols.len();
    for (i, s) in symbols.iter_mut().enumerate() {
        s.prev = i.checked_sub(1);
        s.next = (i + 1 < len).then_some(i + 1);
    }
}

/// llama.cpp's queue-driven merging (long pieces).
fn merge_queue(
    tok: &Tokenizer,
    text: &str,
    symbols: &mut [Symbol],
    queue: &mut BinaryHeap<Bigram>,
) {
    let try_add = |queue: &mut BinaryHeap<Bigram>,
                   symbols: &[Symbol],
                   left: Option<usize>,
                   right: Option<usize>| {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let (l, r) = (&symbols[left], &symbols[right]);
        if let Some(score) = pair_score(tok, text, l, r) {
            queue.push(Bigram {
                left,
                right,
                score,
                size: l.n + r.n,
            });
        }
    };

    for i in 1..symbols.len() {
        try_add(queue, symbols, Some(i - 1), Some(i));
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
        try_add(queue, symbols, symbols[bigram.left].prev, Some(bigram.left));
        try_add(queue, symbols, Some(bigram.left), symbols[bigram.left].next);
    }
}

impl Session {
    /// `llm_tokenizer_spm_session::tokenize` on one piece.
    fn run(&mut self, tok: &Tokenizer, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let bytes = text.as_bytes();
        let symbols = &mut self.symbols;
        let queue = &mut self.queue;
        symbols.clear();
        queue.clear();
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

        if symbols.len() <= SMALL {
            merge_scan(tok, text, symbols, &mut self.scores);
        } else {
            merge_queue(tok, text, symbols, queue);
        }

        // `resegment`: merged symbols are always tokens (a bigram is only queued when its text is one),
        // so llama.cpp's `rev_merge` lookup can never succeed; a symbol that is not a token is a single
        // character missing from the vocabulary, emitted as byte tokens.
        let mut i = if symbols.is_empty() { None } else { Some(0) };
        while let Some(idx) = i {
            let s = symbols[idx];
            match text
                .get(s.start..s.start + s.n)
                .and_then(|s| tok.text_to_token(s))
            {
                Some(id) => out.push(id),
                None => {
                    for &b in &bytes[s.start..s.start + s.n] {
                        out.push(tok.spm_byte_token(b)?);
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }
}
