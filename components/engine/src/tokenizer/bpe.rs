//! Rank-ordered BPE: llama.cpp's `llm_tokenizer_bpe_session` (src/llama-vocab.cpp).
//!
//! llama.cpp keys its merge table by the pair of strings. Here every string that takes part in a
//! merge gets a symbol id (the token id for vocabulary strings, ids past the vocabulary for the rare
//! others), so the table is keyed by a pair of u32 and a merge also yields the merged symbol's id.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{FastMap, Tokenizer};
use crate::{Error, Result};

/// No symbol id: a character that appears in no merge and in no token.
const NONE: u32 = u32::MAX;

/// The merge table.
#[derive(Debug, Default)]
pub(super) struct Merges {
    /// (left, right) packed into a u64 → (rank, merged symbol).
    pairs: FastMap<u64, (u32, u32)>,
    /// Symbol ids of merge strings that are not tokens (ids from `n_vocab` up).
    extra: FastMap<Box<str>, u32>,
}

#[inline]
fn pack(l: u32, r: u32) -> u64 {
    (u64::from(l) << 32) | u64::from(r)
}

impl Merges {
    /// Parses `tokenizer.ggml.merges` ("left right" per entry; the first occurrence of a pair keeps
    /// its rank, as `bpe_ranks.emplace` does).
    pub(super) fn build(
        merges: &[String],
        token_to_id: &FastMap<Box<str>, u32>,
        n_vocab: u32,
    ) -> Result<Self> {
        let mut m = Merges::default();
        m.pairs
            .try_reserve(merges.len())
            .map_err(|_| Error::OutOfMemory(format!("{} BPE merges", merges.len())))?;
        let mut joined = String::new();
        for (rank, word) in merges.iter().enumerate() {
            let rank = u32::try_from(rank)
                .map_err(|_| Error::InvalidModel("too many BPE merges".into()))?;
            // `word.find(' ', 1)`: the split is the first space after the first byte.
            let Some(pos) = word
                .as_bytes()
                .iter()
                .skip(1)
                .position(|&b| b == b' ')
                .map(|p| p + 1)
            else {
                // llama.cpp records ("", ""), which can never match a symbol.
                continue;
            };
            let (first, second) = (&word[..pos], &word[pos + 1..]);
            if first.is_empty() || second.is_empty() {
                continue;
            }
            let l = m.intern(first, token_to_id, n_vocab)?;
            let r = m.intern(second, token_to_id, n_vocab)?;
            let key = pack(l, r);
            if m.pairs.contains_key(&key) {
                continue;
            }
            joined.clear();
            joined.push_str(first);
            joined.push_str(second);
            let merged = m.intern(&joined, token_to_id, n_vocab)?;
            m.pairs.insert(key, (rank, merged));
        }
        Ok(m)
    }

    fn intern(
        &mut self,
        s: &str,
        token_to_id: &FastMap<Box<str>, u32>,
        n_vocab: u32,
    ) -> Result<u32> {
        if let Some(&id) = token_to_id.get(s) {
            return Ok(id);
        }
        if let Some(&id) = self.extra.get(s) {
            return Ok(id);
        }
        let id = u32::try_from(self.extra.len())
            .ok()
            .and_then(|n| n.checked_add(n_vocab))
            .filter(|&id| id != NONE)
            .ok_or_else(|| Error::InvalidModel("too many BPE merge strings".into()))?;
        self.extra.insert(s.into(), id);
        Ok(id)
    }

    /// The symbol id of `s`, or [`NONE`].
    #[inline]
    fn symbol(&self, s: &str, token_to_id: &FastMap<Box<str>, u32>) -> u32 {
        token_to_id
            .get(s)
            .or_else(|| {
                if self.extra.is_empty() {
                    None
                } else {
                    self.extra.get(s)
                }
            })
            .copied()
            .unwrap_or(NONE)
    }

    #[inline]
    fn rank(&self, l: u32, r: u32) -> Option<(u32, u32)> {
        if l == NONE || r == NONE {
            return None;
        }
        self.pairs.get(&pack(l, r)).copied()
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    n: usize,
    prev: Option<usize>,
    next: Option<usize>,
    id: u32,
}

/// Reusable buffers for one `tokenize` call.
#[derive(Default)]
pub(super) struct Session {
    symbols: Vec<Symbol>,
    /// Min-heap on (rank, left): `llm_bigram_bpe::comparator`. The ids detect stale entries.
    queue: BinaryHeap<Reverse<(u32, usize, usize, u32, u32)>>,
}

impl Session {
    /// Tokenizes one pre-tokenized (and, for byte-level BPE, byte-encoded) word.
    pub(super) fn word(&mut self, tok: &Tokenizer, word: &str, out: &mut Vec<u32>) -> Result<()> {
        let merges = &tok.merges;
        let symbols = &mut self.symbols;
        let queue = &mut self.queue;
        symbols.clear();
        queue.clear();

        let whole = |w: &str| tok.token_to_id.get(w).copied();
        let single = if tok.ignore_merges {
            whole(word)
        } else if tok.gemma4_newlines && word.bytes().all(|b| b == b'\n') {
            // Gemma 4: a run of newlines that is a token stays whole (llama.cpp PR 21343).
            whole(word)
        } else {
            None
        };
        if let Some(id) = single {
            out.push(id);
            return Ok(());
        }

        let bytes = word.as_bytes();
        let mut offset = 0;
        while offset < bytes.len() {
            let n = super::unicode::utf8_len(bytes[offset]).min(bytes.len() - offset);
            let index = symbols.len();
            let id = word
                .get(offset..offset + n)
                .map_or(NONE, |s| merges.symbol(s, &tok.token_to_id));
            symbols.push(Symbol {
                start: offset,
                n,
                prev: index.checked_sub(1),
                next: if offset + n == bytes.len() {
                    None
                } else {
                    Some(index + 1)
                },
                id,
            });
            offset += n;
        }

        let add = |queue: &mut BinaryHeap<_>,
                   symbols: &[Symbol],
                   left: Option<usize>,
                   right: Option<usize>| {
            let (Some(left), Some(right)) = (left, right) else {
                return;
            };
            let (l, r) = (symbols[left].id, symbols[right].id);
            if let Some((rank, _)) = merges.rank(l, r) {
                queue.push(Reverse((rank, left, right, l, r)));
            }
        };
        for i in 1..symbols.len() {
            add(queue, symbols, Some(i - 1), Some(i));
        }

        while let Some(Reverse((_, left, right, lid, rid))) = queue.pop() {
            let (l, r) = (symbols[left], symbols[right]);
            // llama.cpp compares the concatenated text; a symbol only changes by absorbing its right
            // neighbour, so comparing both ids is the same test.
            if l.n == 0 || r.n == 0 || l.id != lid || r.id != rid {
                continue;
            }
            let Some((_, merged)) = merges.rank(lid, rid) else {
                continue;
            };
            symbols[left].n += r.n;
            symbols[left].id = merged;
            symbols[right].n = 0;
            symbols[left].next = r.next;
            if let Some(next) = r.next {
                symbols[next].prev = Some(left);
            }
            add(queue, symbols, symbols[left].prev, Some(left));
            add(queue, symbols, Some(left), symbols[left].next);
        }

        for s in symbols.iter().filter(|s| s.n > 0) {
            if s.id < tok.n_vocab_u32() {
                out.push(s.id);
                continue;
            }
            // Not a token: byte by byte, skipping bytes that have no token either.
            for &b in &bytes[s.start..s.start + s.n] {
                if let Some(id) = tok.byte_tokens[usize::from(b)] {
                    out.push(id);
                }
            }
        }
        Ok(())
    }
}
