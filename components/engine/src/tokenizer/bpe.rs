//! Rank-ordered BPE: llama.cpp's `llm_tokenizer_bpe_session` (src/llama-vocab.cpp).
//!
//! llama.cpp keys its merge table by the pair of strings. Here every string that takes part in a
//! merge gets a symbol id (the token id for vocabulary strings, ids past the vocabulary for the rare
//! others), so the table is keyed by a pair of u32 and a merge also yields the merged symbol's id.
//!
//! llama.cpp merges with a priority queue ordered by (rank, left position), skipping stale entries.
//! A merge only changes its two symbols, and a symbol's string only grows, so the entries that are not
//! stale are exactly the current adjacent pairs: the queue's next valid entry is the adjacent pair with
//! the lowest (rank, position). Short words take that minimum by a scan (no queue); long words use the
//! queue, cut first where no merge can ever join two characters (see [`Merges::joins`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::unicode::{byte_encoded_cpt, utf8_len};
use super::{FastMap, FastSet, Tokenizer};
use crate::{Error, Result};

/// No symbol id: a character that appears in no merge and in no token.
const NONE: u32 = u32::MAX;
/// Words of at most this many symbols merge by scanning instead of through a queue.
const SMALL: usize = 48;

/// The merge table.
#[derive(Debug, Default)]
pub(super) struct Merges {
    /// (left, right) packed into a u64 → (rank, merged symbol).
    pairs: FastMap<u64, (u32, u32)>,
    /// Symbol ids of merge strings that are not tokens (ids from `n_vocab` up).
    extra: FastMap<Box<str>, u32>,
    /// (last char of a merge's left string, first char of its right string): a merge can only ever
    /// join two adjacent characters of a word if they form one of these pairs.
    joins: FastSet<u64>,
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
            let (Some(last_l), Some(first_r)) = (first.chars().next_back(), second.chars().next())
            else {
                continue;
            };
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
            m.joins.insert(pack(u32::from(last_l), u32::from(first_r)));
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
    pub(super) fn symbol(&self, s: &str, token_to_id: &FastMap<Box<str>, u32>) -> u32 {
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

    /// (rank, merged symbol) of the pair, if it merges.
    #[inline]
    fn rank(&self, l: u32, r: u32) -> Option<(u32, u32)> {
        if l == NONE || r == NONE {
            return None;
        }
        self.pairs.get(&pack(l, r)).copied()
    }

    /// Whether some merge could join code point `a` with the following code point `b`.
    #[inline]
    fn joins(&self, a: u32, b: u32) -> bool {
        self.joins.contains(&pack(a, b))
    }
}

/// A symbol: `n` units (bytes of the word) from `start`.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    n: usize,
    id: u32,
}

/// Heap bookkeeping per symbol.
#[derive(Clone, Copy)]
struct Link {
    prev: Option<usize>,
    next: Option<usize>,
}

/// (rank, left, right, left id, right id).
type QueueEntry = (u32, usize, usize, u32, u32);

/// Reusable buffers for one `tokenize` call.
#[derive(Default)]
pub(super) struct Session {
    symbols: Vec<Symbol>,
    ranks: Vec<(u32, u32)>,
    links: Vec<Link>,
    /// Min-heap on (rank, left): `llm_bigram_bpe::comparator`. The ids detect stale entries.
    queue: BinaryHeap<Reverse<QueueEntry>>,
    encoded: String,
}

/// How the final symbols that are not tokens fall back to byte tokens.
#[derive(Clone, Copy)]
enum Units<'a> {
    /// Byte-level BPE: one unit per raw byte of the word.
    Bytes(&'a [u8]),
    /// UTF-8 BPE (Gemma 4): the word's own bytes.
    Utf8(&'a str),
}

impl Session {
    /// Tokenizes one pre-tokenized word of byte-level BPE, given as raw bytes (each byte is one
    /// initial symbol: the character GPT-2's byte encoding gives it).
    pub(super) fn word_bytes(
        &mut self,
        tok: &Tokenizer,
        raw: &[u8],
        out: &mut Vec<u32>,
    ) -> Result<()> {
        if tok.ignore_merges {
            self.encoded.clear();
            for &b in raw {
                super::unicode::push_byte_encoded(&mut self.encoded, b);
            }
            if let Some(id) = tok.text_to_token(&self.encoded) {
                out.push(id);
                return Ok(());
            }
        }
        let cut = |a: &u8, b: &u8| !tok.merges.joins(byte_encoded_cpt(*a), byte_encoded_cpt(*b));
        for piece in split_where(raw, cut) {
            let base = piece.as_ptr() as usize - raw.as_ptr() as usize;
            self.symbols.clear();
            self.symbols
                .extend(piece.iter().enumerate().map(|(i, &b)| Symbol {
                    start: base + i,
                    n: 1,
                    id: tok.byte_symbols[usize::from(b)],
                }));
            self.merge_and_emit(tok, Units::Bytes(raw), out);
        }
        Ok(())
    }

    /// Tokenizes one pre-tokenized word of UTF-8 BPE (initial symbols are characters).
    pub(super) fn word_utf8(
        &mut self,
        tok: &Tokenizer,
        word: &str,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let single =
            if tok.ignore_merges || (tok.gemma4_newlines && word.bytes().all(|b| b == b'\n')) {
                // Gemma 4: a run of newlines that is a token stays whole (llama.cpp PR 21343).
                tok.text_to_token(word)
            } else {
                None
            };
        if let Some(id) = single {
            out.push(id);
            return Ok(());
        }
        let bytes = word.as_bytes();
        let mut seg_start = 0;
        let mut prev: Option<char> = None;
        let mut emit = |s: &mut Session, from: usize, to: usize| {
            s.symbols.clear();
            let mut offset = from;
            while offset < to {
                let n = utf8_len(bytes[offset]).min(to - offset);
                let id = word
                    .get(offset..offset + n)
                    .map_or(NONE, |c| tok.merges.symbol(c, &tok.token_to_id));
                s.symbols.push(Symbol {
                    start: offset,
                    n,
                    id,
                });
                offset += n;
            }
            s.merge_and_emit(tok, Units::Utf8(word), out);
        };
        for (i, c) in word.char_indices() {
            if let Some(p) = prev
                && !tok.merges.joins(u32::from(p), u32::from(c))
            {
                emit(self, seg_start, i);
                seg_start = i;
            }
            prev = Some(c);
        }
        emit(self, seg_start, bytes.len());
        Ok(())
    }

    /// Runs the merges over `self.symbols` and appends the resulting tokens.
    fn merge_and_emit(&mut self, tok: &Tokenizer, units: Units<'_>, out: &mut Vec<u32>) {
        if self.symbols.len() <= SMALL {
            self.merge_scan(tok);
        } else {
            self.merge_queue(tok);
        }
        let n_vocab = tok.n_vocab_u32();
        for s in self.symbols.iter().filter(|s| s.n > 0) {
            if s.id < n_vocab {
                out.push(s.id);
                continue;
            }
            // Not a token: byte by byte, skipping bytes that have no token either.
            match units {
                Units::Bytes(raw) => out.extend(
                    raw[s.start..s.start + s.n]
                        .iter()
                        .filter_map(|&b| tok.byte_tokens[usize::from(b)]),
                ),
                Units::Utf8(w) => out.extend(
                    w.as_bytes()[s.start..s.start + s.n]
                        .iter()
                        .filter_map(|&b| tok.byte_tokens[usize::from(b)]),
                ),
            }
        }
    }

    /// Merging by repeated minimum search over the adjacent pairs (short words).
    fn merge_scan(&mut self, tok: &Tokenizer) {
        let merges = &tok.merges;
        let symbols = &mut self.symbols;
        let ranks = &mut self.ranks;
        let none = (u32::MAX, NONE);
        ranks.clear();
        ranks.extend(
            symbols
                .windows(2)
                .map(|w| merges.rank(w[0].id, w[1].id).unwrap_or(none)),
        );
        // Lowest rank, leftmost on ties.
        while let Some((i, (rank, merged))) = ranks
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|&(i, r)| (r.0, i))
            && rank != u32::MAX
        {
            symbols[i].n += symbols[i + 1].n;
            symbols[i].id = merged;
            symbols.remove(i + 1);
            ranks.remove(i);
            if i > 0 {
                ranks[i - 1] = merges
                    .rank(symbols[i - 1].id, symbols[i].id)
                    .unwrap_or(none);
            }
            if i < ranks.len() {
                ranks[i] = merges
                    .rank(symbols[i].id, symbols[i + 1].id)
                    .unwrap_or(none);
            }
        }
    }

    /// llama.cpp's queue-driven merging (long words).
    fn merge_queue(&mut self, tok: &Tokenizer) {
        let merges = &tok.merges;
        let symbols = &mut self.symbols;
        let links = &mut self.links;
        let queue = &mut self.queue;
        let len = symbols.len();
        links.clear();
        links.extend((0..len).map(|i| Link {
            prev: i.checked_sub(1),
            next: (i + 1 < len).then_some(i + 1),
        }));
        queue.clear();
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
        for i in 1..len {
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
            let next = links[right].next;
            links[left].next = next;
            if let Some(next) = next {
                links[next].prev = Some(left);
            }
            add(queue, symbols, links[left].prev, Some(left));
            add(queue, symbols, Some(left), links[left].next);
        }
        // Dead symbols have n == 0 and are skipped by the caller; order is already left to right.
    }
}

/// Splits `s` between every two adjacent elements for which `cut` holds.
fn split_where<T>(s: &[T], mut cut: impl FnMut(&T, &T) -> bool) -> impl Iterator<Item = &[T]> {
    let mut start = 0;
    let mut i = 1;
    std::iter::from_fn(move || {
        if start >= s.len() {
            return None;
        }
        while i < s.len() {
            if cut(&s[i - 1], &s[i]) {
                let piece = &s[start..i];
                start = i;
                i += 1;
                return Some(piece);
            }
            i += 1;
        }
        let piece = &s[start..];
        start = s.len();
        Some(piece)
    })
}
