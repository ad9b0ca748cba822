//! Tokenizers built from GGUF metadata that reproduce llama.cpp's `llama_tokenize`,
//! `llama_token_to_piece` and `llama_detokenize` (src/llama-vocab.cpp, src/unicode.cpp).
//!
//! Two vocabulary types are implemented: SPM (`tokenizer.ggml.model = "llama"`: score-driven merges
//! with byte fallback) and BPE (`"gpt2"`, and `"gemma4"`: rank-driven merges after a pre-tokenizer
//! chosen by `tokenizer.ggml.pre`). Special-token handling, BOS/EOS/EOT/EOG detection and the
//! attribute fix-ups follow `llama_vocab::impl::load`.
//!
//! ```no_run
//! # fn main() -> chord_engine::Result<()> {
//! use chord_engine::gguf::Gguf;
//! use chord_engine::tokenizer::{StreamDecoder, Tokenizer};
//! let file = std::fs::File::open("model.gguf").map_err(|e| chord_engine::Error::Store(e.to_string()))?;
//! let tok = Tokenizer::from_gguf(&Gguf::read(&file)?)?;
//! let ids = tok.tokenize("Hello world", true, false)?;
//! let mut dec = StreamDecoder::new(false);
//! let mut text = String::new();
//! for &id in &ids {
//!     text += &dec.push(&tok, id)?;
//! }
//! text += &dec.finish();
//! # Ok(()) }
//! ```

mod bpe;
mod pre;
mod spm;
mod stream;
mod unicode;
mod unicode_data;

#[cfg(test)]
mod tests;

pub use stream::StreamDecoder;

use crate::gguf::names::Kv;
use crate::gguf::{Array, Gguf, Metadata};
use crate::{Error, Result};
use unicode::Splitter;

pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// The vocabulary's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    /// SentencePiece BPE over scores (`tokenizer.ggml.model = "llama"`).
    Spm,
    /// Byte-level (or, for Gemma 4, UTF-8) BPE over merge ranks (`"gpt2"`, `"gemma4"`).
    Bpe,
}

/// Token attributes (`llama_token_attr` bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TokenAttr(u32);

impl TokenAttr {
    pub const UNDEFINED: TokenAttr = TokenAttr(0);
    pub const UNKNOWN: TokenAttr = TokenAttr(1 << 0);
    pub const UNUSED: TokenAttr = TokenAttr(1 << 1);
    pub const NORMAL: TokenAttr = TokenAttr(1 << 2);
    pub const CONTROL: TokenAttr = TokenAttr(1 << 3);
    pub const USER_DEFINED: TokenAttr = TokenAttr(1 << 4);
    pub const BYTE: TokenAttr = TokenAttr(1 << 5);
    pub const NORMALIZED: TokenAttr = TokenAttr(1 << 6);
    pub const LSTRIP: TokenAttr = TokenAttr(1 << 7);
    pub const RSTRIP: TokenAttr = TokenAttr(1 << 8);
    pub const SINGLE_WORD: TokenAttr = TokenAttr(1 << 9);

    /// The raw bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Whether any bit of `other` is set.
    pub fn intersects(self, other: TokenAttr) -> bool {
        self.0 & other.0 != 0
    }

    /// `self` with the bits of `other` set.
    pub fn with(self, other: TokenAttr) -> TokenAttr {
        TokenAttr(self.0 | other.0)
    }

    /// `self` with the bits of `other` cleared.
    pub fn without(self, other: TokenAttr) -> TokenAttr {
        TokenAttr(self.0 & !other.0)
    }

    /// The attribute for a GGUF token type (`LLAMA_TOKEN_TYPE_*`).
    fn from_token_type(t: i128) -> TokenAttr {
        match t {
            1 => TokenAttr::NORMAL,
            2 => TokenAttr::UNKNOWN,
            3 => TokenAttr::CONTROL,
            4 => TokenAttr::USER_DEFINED,
            5 => TokenAttr::UNUSED,
            6 => TokenAttr::BYTE,
            _ => TokenAttr::UNDEFINED,
        }
    }
}

impl std::fmt::Debug for TokenAttr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NAMES: [&str; 10] = [
            "UNKNOWN",
            "UNUSED",
            "NORMAL",
            "CONTROL",
            "USER_DEFINED",
            "BYTE",
            "NORMALIZED",
            "LSTRIP",
            "RSTRIP",
            "SINGLE_WORD",
        ];
        let set: Vec<&str> = (0..10)
            .filter(|b| self.0 & (1 << b) != 0)
            .map(|b| NAMES[b])
            .collect();
        if set.is_empty() {
            f.write_str("UNDEFINED")
        } else {
            f.write_str(&set.join("|"))
        }
    }
}

#[derive(Debug, Clone)]
struct TokenData {
    text: Box<str>,
    score: f32,
    attr: TokenAttr,
}

/// Special token ids (`None` is llama.cpp's `LLAMA_TOKEN_NULL`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

/// Selects one field of [`SpecialTokens`].
type SpecialField = fn(&mut SpecialTokens) -> &mut Option<u32>;

/// A tokenizer built from a GGUF vocabulary; immutable and shareable across threads.
#[derive(Debug)]
pub struct Tokenizer {
    kind: VocabKind,
    model: String,
    pre_name: String,
    pre: Option<pre::PreConfig>,
    splitters: Vec<Splitter>,
    tokens: Vec<TokenData>,
    token_to_id: FastMap<Box<str>, u32>,
    merges: bpe::Merges,
    special: SpecialTokens,
    add_bos: bool,
    add_eos: bool,
    add_sep: bool,
    add_space_prefix: bool,
    ignore_merges: bool,
    clean_spaces: bool,
    escape_whitespaces: bool,
    gemma4_newlines: bool,
    /// Sorted end-of-generation ids.
    eog: Vec<u32>,
    /// Control, user-defined and unknown tokens, longest text first (`cache_special_tokens`).
    special_cache: Vec<u32>,
    /// Finds which of `special_cache` occur in a text (patterns in `special_cache` order).
    special_matcher: Option<aho_corasick::AhoCorasick>,
    /// SPM: every pair of characters adjacent in some token (see `spm::tokenize`).
    spm_pairs: FastSet<u64>,
    /// Byte fallback: the token for each byte, per vocabulary type (see `build_byte_fallback`).
    byte_tokens: [Option<u32>; 256],
    /// Byte-level BPE: the initial symbol of each raw byte (its encoded character's symbol id).
    byte_symbols: [u32; 256],
    /// `token_to_piece(id, special = true)` of every token, concatenated (`cache_token_to_piece`).
    pieces: Vec<u8>,
    piece_starts: Vec<usize>,
}

/// One piece of the input after special-token partitioning (`fragment_buffer_variant`).
#[derive(Debug, Clone, Copy)]
enum Fragment {
    Text(usize, usize),
    Token(u32),
}

fn key(k: Kv) -> String {
    k.key("")
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF's metadata.
    pub fn from_gguf(gguf: &Gguf) -> Result<Tokenizer> {
        Self::from_metadata(&gguf.metadata)
    }

    /// Builds the tokenizer from GGUF metadata (`llama_vocab::impl::load`).
    pub fn from_metadata(md: &Metadata) -> Result<Tokenizer> {
        let model_key = key(Kv::TokenizerModel);
        let model = md.require(&model_key, md.get_str(&model_key))?.to_string();
        let mut pre_name = md
            .get_str(&key(Kv::TokenizerPre))?
            .unwrap_or("")
            .to_string();

        let mut sp = SpecialTokens::default();
        let kind = match model.as_str() {
            "llama" => {
                sp.bos = Some(1);
                sp.eos = Some(2);
                sp.unk = Some(0);
                VocabKind::Spm
            }
            "gpt2" => {
                sp.bos = Some(11);
                sp.eos = Some(11);
                VocabKind::Bpe
            }
            "gemma4" => {
                pre_name = "gemma4".into();
                VocabKind::Bpe
            }
            "no_vocab" | "none" => {
                return Err(Error::Unsupported(
                    "the model has no vocabulary (tokenizer.ggml.model = none)".into(),
                ));
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "tokenizer model {other:?} (implemented: llama/SPM, gpt2/BPE, gemma4)"
                )));
            }
        };

        // Flags: llama.cpp's per-type defaults, then the pre-tokenizer's, then the metadata's.
        let mut add_space_prefix = false;
        let mut add_bos;
        let mut add_eos = false;
        let mut add_sep = false;
        let mut ignore_merges = false;
        let mut clean_spaces = false;
        let mut escape_whitespaces = true;
        let mut pre = None;
        match kind {
            VocabKind::Bpe => {
                let cfg = pre::lookup(&pre_name).ok_or_else(|| {
                    Error::Unsupported(format!(
                        "BPE pre-tokenizer {pre_name:?} (tokenizer.ggml.pre)"
                    ))
                })?;
                escape_whitespaces = cfg.escape_whitespaces;
                clean_spaces = cfg.clean_spaces;
                ignore_merges = cfg.ignore_merges;
                add_bos = cfg.add_bos;
                add_sep = cfg.add_sep;
                if cfg.no_default_bos {
                    sp.bos = None;
                }
                pre = Some(cfg);
            }
            VocabKind::Spm => {
                add_space_prefix = true;
                add_bos = true;
            }
        }
        if let Some(v) = md.get_bool(&key(Kv::TokenizerAddSpacePrefix))? {
            add_space_prefix = v;
        }

        // Tokens, scores, types.
        let tokens_key = key(Kv::TokenizerTokens);
        let texts = md.require(&tokens_key, md.get_str_array(&tokens_key))?;
        let n_tokens = texts.len();
        if n_tokens == 0 {
            return Err(Error::InvalidModel(format!("{tokens_key} is empty")));
        }
        let n_vocab = u32::try_from(n_tokens)
            .ok()
            .filter(|&n| n <= i32::MAX as u32)
            .ok_or_else(|| {
                Error::InvalidModel(format!("{tokens_key} has {n_tokens} entries, too many"))
            })?;

        let scores_key = key(Kv::TokenizerScores);
        let scores: Option<Vec<f32>> = match md.get_array(&scores_key)? {
            None => None,
            Some(Array::F32(v)) => Some(v.clone()),
            Some(Array::I32(v)) => Some(v.iter().map(|&s| s as f32).collect()),
            Some(a) => {
                return Err(Error::InvalidModel(format!(
                    "{scores_key} is an array of {}, expected f32 or i32",
                    a.elem_name()
                )));
            }
        };
        if let Some(s) = &scores
            && s.len() < n_tokens
        {
            return Err(Error::InvalidModel(format!(
                "{scores_key} has {} entries for {n_tokens} tokens",
                s.len()
            )));
        }
        let types_key = key(Kv::TokenizerTokenType);
        let types = md.get_array(&types_key)?;
        if let Some(t) = types {
            if t.int_at(0).is_none() && !t.is_empty() {
                return Err(Error::InvalidModel(format!(
                    "{types_key} is an array of {}, expected integers",
                    t.elem_name()
                )));
            }
            if t.len() < n_tokens {
                return Err(Error::InvalidModel(format!(
                    "{types_key} has {} entries for {n_tokens} tokens",
                    t.len()
                )));
            }
        }

        let mut tokens = Vec::new();
        tokens
            .try_reserve_exact(n_tokens)
            .map_err(|_| Error::OutOfMemory(format!("{n_tokens} tokens")))?;
        let mut token_to_id: FastMap<Box<str>, u32> = FastMap::default();
        token_to_id
            .try_reserve(n_tokens)
            .map_err(|_| Error::OutOfMemory(format!("{n_tokens} tokens")))?;
        for (i, text) in texts.iter().enumerate() {
            let text: Box<str> = if text.is_empty() {
                format!("[EMPTY_{i}]").into()
            } else {
                text.as_str().into()
            };
            // Later duplicates win, as `token_to_id[word] = i`.
            token_to_id.insert(text.clone(), i as u32);
            let attr = match types {
                Some(t) => TokenAttr::from_token_type(t.int_at(i).unwrap_or(0)),
                None => TokenAttr::NORMAL,
            };
            let score = scores.as_ref().map_or(0.0, |s| s[i]);
            tokens.push(TokenData { text, score, attr });
        }

        let merges = if kind == VocabKind::Bpe {
            let merges_key = key(Kv::TokenizerMerges);
            let list = md.require(&merges_key, md.get_str_array(&merges_key))?;
            bpe::Merges::build(list, &token_to_id, n_vocab)?
        } else {
            bpe::Merges::default()
        };

        let splitters = match &pre {
            Some(cfg) => cfg
                .exprs
                .iter()
                .map(|e| unicode::compile(e))
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };

        // Special token ids: defaults out of range are dropped; metadata ids out of range keep the
        // current value (llama.cpp warns "bad special token").
        {
            let entries: [(Kv, SpecialField); 17] = [
                (Kv::TokenizerBosId, |s| &mut s.bos),
                (Kv::TokenizerEosId, |s| &mut s.eos),
                (Kv::TokenizerEotId, |s| &mut s.eot),
                (Kv::TokenizerEomId, |s| &mut s.eom),
                (Kv::TokenizerUnknownId, |s| &mut s.unk),
                (Kv::TokenizerSeparatorId, |s| &mut s.sep),
                (Kv::TokenizerPaddingId, |s| &mut s.pad),
                (Kv::TokenizerMaskId, |s| &mut s.mask),
                (Kv::TokenizerFimPreId, |s| &mut s.fim_pre),
                (Kv::TokenizerFimSufId, |s| &mut s.fim_suf),
                (Kv::TokenizerFimMidId, |s| &mut s.fim_mid),
                (Kv::TokenizerFimPadId, |s| &mut s.fim_pad),
                (Kv::TokenizerFimRepId, |s| &mut s.fim_rep),
                (Kv::TokenizerFimSepId, |s| &mut s.fim_sep),
                (Kv::TokenizerPrefixId, |s| &mut s.fim_pre),
                (Kv::TokenizerSuffixId, |s| &mut s.fim_suf),
                (Kv::TokenizerMiddleId, |s| &mut s.fim_mid),
            ];
            for (k, field) in entries {
                let id = field(&mut sp);
                if id.is_some_and(|i| i >= n_vocab) {
                    *id = None;
                }
                if let Some(new_id) = md.get_u32(&key(k))?
                    && new_id < n_vocab
                {
                    *id = Some(new_id);
                }
            }
        }

        if let Some(v) = md.get_bool(&key(Kv::TokenizerAddBos))? {
            add_bos = v;
        }
        if let Some(v) = md.get_bool(&key(Kv::TokenizerAddEos))? {
            add_eos = v;
        }
        if let Some(v) = md.get_bool(&key(Kv::TokenizerAddSep))? {
            add_sep = v;
        }
        let is_gemma4 = pre.is_some_and(|c| c.kind == pre::PreKind::Gemma4);
        if is_gemma4 {
            // llama.cpp PR 21500: Gemma 4 always adds BOS.
            add_bos = true;
        }

        let mut tok = Tokenizer {
            kind,
            model,
            pre_name,
            pre,
            splitters,
            tokens,
            token_to_id,
            merges,
            special: sp,
            add_bos,
            add_eos,
            add_sep,
            add_space_prefix,
            ignore_merges,
            clean_spaces,
            escape_whitespaces,
            gemma4_newlines: is_gemma4,
            eog: Vec::new(),
            special_cache: Vec::new(),
            special_matcher: None,
            spm_pairs: FastSet::default(),
            byte_tokens: [None; 256],
            byte_symbols: [u32::MAX; 256],
            pieces: Vec::new(),
            piece_starts: Vec::new(),
        };
        tok.detect_special_by_text();
        tok.build_byte_fallback();
        if tok.kind == VocabKind::Spm {
            tok.build_spm_pairs();
        }
        tok.build_special_cache()?;
        tok.build_pieces()?;
        tok.apply_strip_attrs(md)?;
        Ok(tok)
    }

    /// The part of `load` that finds EOT/EOM/FIM and end-of-generation tokens by their text.
    ///
    /// llama.cpp takes the first match while iterating an `unordered_map`, so when a vocabulary holds
    /// several candidates its pick depends on hashing; here the first candidate in llama.cpp's list
    /// that exists wins (e.g. `<|im_end|>` before `<|endoftext|>`).
    fn detect_special_by_text(&mut self) {
        const EOT: &[&str] = &[
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "<|end_of_text|>",
            "<EOT>",
            "_<EOT>",
            "[EOT]",
            "<\u{FF5C}end\u{2581}of\u{2581}sentence\u{FF5C}>",
            "<end_of_utterance>",
        ];
        const EOM: &[&str] = &["<|eom_id|>"];
        const FIM_PRE: &[&str] = &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<\u{FF5C}fim\u{2581}begin\u{FF5C}>",
            "<PRE>",
            "\u{2581}<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ];
        const FIM_SUF: &[&str] = &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<\u{FF5C}fim\u{2581}hole\u{FF5C}>",
            "<SUF>",
            "\u{2581}<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ];
        const FIM_MID: &[&str] = &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<\u{FF5C}fim\u{2581}end\u{FF5C}>",
            "<MID>",
            "\u{2581}<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ];
        const FIM_PAD: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
        const FIM_REP: &[&str] = &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ];
        const FIM_SEP: &[&str] = &["<|file_sep|>"];
        const EOG: &[&str] = &[
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<|return|>",
            "<|call|>",
            "<|flush|>",
            "<|calls|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "</s>",
            "<|eom_id|>",
            "<EOT>",
            "_<EOT>",
            "[EOT]",
            "[EOS]",
            "<|end_of_text|>",
            "<end_of_utterance>",
            "<eos>",
            "<turn|>",
            "<|tool_response>",
            "<\u{FF5C}end\u{2581}of\u{2581}sentence\u{FF5C}>",
            "[e~[",
        ];

        let lists: [(&[&str], SpecialField); 8] = [
            (EOT, |s| &mut s.eot),
            (EOM, |s| &mut s.eom),
            (FIM_PRE, |s| &mut s.fim_pre),
            (FIM_SUF, |s| &mut s.fim_suf),
            (FIM_MID, |s| &mut s.fim_mid),
            (FIM_PAD, |s| &mut s.fim_pad),
            (FIM_REP, |s| &mut s.fim_rep),
            (FIM_SEP, |s| &mut s.fim_sep),
        ];
        for (names, field) in lists {
            if field(&mut self.special).is_some() {
                continue;
            }
            if let Some(id) = names.iter().find_map(|t| self.text_to_token(t)) {
                *field(&mut self.special) = Some(id);
                self.add_attr(id, TokenAttr::CONTROL);
            }
        }

        // Control tokens whose text contains "unused" are unused.
        let canonical: Vec<u32> = self.token_to_id.values().copied().collect();
        for &id in &canonical {
            let t = &mut self.tokens[id as usize];
            if t.attr.intersects(TokenAttr::CONTROL) && t.text.contains("unused") {
                t.attr = t.attr.with(TokenAttr::UNUSED);
            }
        }

        let mut eog: Vec<u32> = [
            self.special.fim_pad,
            self.special.fim_rep,
            self.special.fim_sep,
        ]
        .into_iter()
        .flatten()
        .collect();
        for name in EOG {
            if let Some(id) = self.text_to_token(name) {
                eog.push(id);
                self.add_attr(id, TokenAttr::CONTROL);
            }
        }
        // gpt-oss: always render these.
        for name in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(id) = self.text_to_token(name) {
                self.tokens[id as usize].attr = TokenAttr::USER_DEFINED;
            }
        }
        eog.extend(
            [self.special.eos, self.special.eot, self.special.eom]
                .into_iter()
                .flatten(),
        );
        eog.sort_unstable();
        eog.dedup();

        // o200k_harmony / solar-open: "<|end|>" is not end-of-generation next to "<|return|>" and
        // "<|call|>" (or "<|calls|>" and "<|flush|>").
        let has = |eog: &[u32], tok: &Tokenizer, t: &str| {
            eog.iter().any(|&id| &*tok.tokens[id as usize].text == t)
        };
        let end_id = eog
            .iter()
            .copied()
            .find(|&id| &*self.tokens[id as usize].text == "<|end|>");
        let has_call = has(&eog, self, "<|call|>") || has(&eog, self, "<|calls|>");
        let has_return = has(&eog, self, "<|return|>");
        let has_flush = has(&eog, self, "<|flush|>");
        if let Some(end_id) = end_id
            && has_call
            && (has_return || has_flush)
        {
            eog.retain(|&id| id != end_id);
            self.tokens[end_id as usize].attr = TokenAttr::USER_DEFINED;
        }
        // Gemma 4 and PLaMo have a normal "</s>".
        let s_id = eog
            .iter()
            .copied()
            .find(|&id| &*self.tokens[id as usize].text == "</s>");
        if let Some(s_id) = s_id
            && (has(&eog, self, "<|tool_response>") || has(&eog, self, "<|plamo:eos|>"))
        {
            eog.retain(|&id| id != s_id);
            self.tokens[s_id as usize].attr = TokenAttr::NORMAL;
        }
        self.eog = eog;
    }

    fn add_attr(&mut self, id: u32, attr: TokenAttr) {
        let t = &mut self.tokens[id as usize];
        t.attr = t.attr.with(attr);
    }

    /// The byte-fallback token of each byte: SPM `<0xXX>` (else the byte itself, `byte_to_token`);
    /// UTF-8 BPE (Gemma 4) `<0xXX>`; byte-level BPE looks up each byte of a symbol's *encoded* text
    /// alone, which only finds a token for the bytes encoded as themselves (printable ASCII), so it is
    /// indexed here by raw byte.
    fn build_byte_fallback(&mut self) {
        let byte_encode = self.pre.is_some_and(|c| c.byte_encode);
        for b in 0..=255u8 {
            let hex = format!("<0x{b:02X}>");
            let own = if b.is_ascii() {
                self.text_to_token(&char::from(b).to_string())
            } else {
                None
            };
            self.byte_tokens[usize::from(b)] = match self.kind {
                VocabKind::Spm => self.text_to_token(&hex).or(own),
                VocabKind::Bpe if byte_encode => {
                    if unicode::byte_encoded_cpt(b) == u32::from(b) {
                        own
                    } else {
                        None
                    }
                }
                VocabKind::Bpe => self.text_to_token(&hex),
            };
            if byte_encode {
                let mut enc = String::new();
                unicode::push_byte_encoded(&mut enc, b);
                self.byte_symbols[usize::from(b)] = self.merges.symbol(&enc, &self.token_to_id);
            }
        }
    }

    fn build_spm_pairs(&mut self) {
        let mut pairs = FastSet::default();
        for t in &self.tokens {
            let mut chars = t.text.chars();
            if let Some(mut a) = chars.next() {
                for b in chars {
                    pairs.insert(spm::pair_key(a, b));
                    a = b;
                }
            }
        }
        self.spm_pairs = pairs;
    }

    fn build_special_cache(&mut self) -> Result<()> {
        let special = TokenAttr::CONTROL
            .with(TokenAttr::USER_DEFINED)
            .with(TokenAttr::UNKNOWN);
        let mut cache: Vec<u32> = (0..self.n_vocab_u32())
            .filter(|&id| self.tokens[id as usize].attr.intersects(special))
            .collect();
        // Longest first; llama.cpp's std::sort leaves ties in an unspecified order, here by id.
        cache.sort_by_key(|&id| std::cmp::Reverse(self.tokens[id as usize].text.len()));
        if !cache.is_empty() {
            let matcher = aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::Standard)
                .build(
                    cache
                        .iter()
                        .map(|&id| self.tokens[id as usize].text.as_bytes()),
                )
                .map_err(|e| Error::InvalidModel(format!("special tokens: {e}")))?;
            self.special_matcher = Some(matcher);
        }
        self.special_cache = cache;
        Ok(())
    }

    /// `token_to_piece` with `special = true` for every token (`cache_token_to_piece`).
    fn build_pieces(&mut self) -> Result<()> {
        let mut pieces = Vec::new();
        let mut starts = Vec::with_capacity(self.tokens.len() + 1);
        for id in 0..self.tokens.len() {
            starts.push(pieces.len());
            let t = &self.tokens[id];
            let rendered = TokenAttr::UNKNOWN
                .with(TokenAttr::CONTROL)
                .with(TokenAttr::USER_DEFINED);
            if t.attr.intersects(rendered) {
                pieces.extend_from_slice(t.text.as_bytes());
            } else if t.attr.intersects(TokenAttr::NORMAL) {
                if self.kind == VocabKind::Spm || self.escape_whitespaces {
                    pieces.extend_from_slice(t.text.replace('\u{2581}', " ").as_bytes());
                } else {
                    decode_byte_level(&t.text, &mut pieces);
                }
            } else if t.attr.intersects(TokenAttr::BYTE) {
                pieces.push(token_to_byte(&t.text)?);
            }
        }
        starts.push(pieces.len());
        self.pieces = pieces;
        self.piece_starts = starts;
        Ok(())
    }

    /// Per-token strip attributes by model name (end of `load`).
    fn apply_strip_attrs(&mut self, md: &Metadata) -> Result<()> {
        let name = md
            .get_str(&key(Kv::GeneralName))?
            .unwrap_or("")
            .to_ascii_lowercase();
        let arch = md.get_str(&key(Kv::GeneralArchitecture))?.unwrap_or("");
        let pre = md.get_str(&key(Kv::TokenizerPre))?.unwrap_or("");
        let contains_any = |s: &str, subs: &[&str]| subs.iter().any(|x| s.contains(x));
        let require = |tok: &Tokenizer, t: &str| {
            tok.text_to_token(t).ok_or_else(|| {
                Error::InvalidModel(format!("phi-3 vocabulary without the token {t:?}"))
            })
        };
        if contains_any(pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code"])
            || contains_any(arch, &["nomic-bert-moe", "jina-bert-v3"])
        {
            if let Some(id) = self.text_to_token("<mask>") {
                self.add_attr(id, TokenAttr::LSTRIP);
            }
        } else if contains_any(&name, &["phi-3", "phi3"]) {
            for i in 0..self.special_cache.len() {
                self.add_attr(self.special_cache[i], TokenAttr::RSTRIP);
            }
            let id = require(self, "</s>")?;
            self.add_attr(id, TokenAttr::RSTRIP);
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                let id = require(self, t)?;
                let a = &mut self.tokens[id as usize].attr;
                *a = a.without(TokenAttr::RSTRIP);
            }
        } else if contains_any(&name, &["modern-bert"])
            && let Some(id) = self.text_to_token("[MASK]")
        {
            self.add_attr(id, TokenAttr::LSTRIP);
        }
        Ok(())
    }

    // ---- accessors ----

    /// SPM or BPE.
    pub fn kind(&self) -> VocabKind {
        self.kind
    }

    /// `tokenizer.ggml.model`.
    pub fn model_name(&self) -> &str {
        &self.model
    }

    /// `tokenizer.ggml.pre` as used (empty for SPM when absent; "gemma4" for Gemma 4).
    pub fn pre_name(&self) -> &str {
        &self.pre_name
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }

    fn n_vocab_u32(&self) -> u32 {
        // Checked to fit when built.
        self.tokens.len() as u32
    }

    /// All special token ids.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.special.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.special.eos
    }

    /// End-of-turn token.
    pub fn eot(&self) -> Option<u32> {
        self.special.eot
    }

    /// Whether `tokenize(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `tokenize(.., add_special = true, ..)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// `tokenizer.ggml.add_sep_token` (used by encoders; not applied by `tokenize` for SPM/BPE).
    pub fn add_sep(&self) -> bool {
        self.add_sep
    }

    /// Whether SPM text gets a leading space.
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// Whether generating `id` ends generation (EOS, EOT, EOM and llama.cpp's list by text).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, sorted.
    pub fn eog_tokens(&self) -> &[u32] {
        &self.eog
    }

    fn data(&self, id: u32) -> Result<&TokenData> {
        self.tokens.get(id as usize).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "token id {id} is out of range (vocabulary of {})",
                self.tokens.len()
            ))
        })
    }

    /// The token's text as stored in the vocabulary.
    pub fn token_text(&self, id: u32) -> Result<&str> {
        Ok(&self.data(id)?.text)
    }

    /// The token's score.
    pub fn token_score(&self, id: u32) -> Result<f32> {
        Ok(self.data(id)?.score)
    }

    /// The token's attributes.
    pub fn token_attr(&self, id: u32) -> Result<TokenAttr> {
        Ok(self.data(id)?.attr)
    }

    /// Whether the token is a control token.
    pub fn is_control(&self, id: u32) -> bool {
        self.tokens
            .get(id as usize)
            .is_some_and(|t| t.attr.intersects(TokenAttr::CONTROL))
    }

    /// The id of the token whose text is exactly `text` (`text_to_token`).
    pub fn text_to_token(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// `llama_token_to_piece(id, lstrip = 0, special)`: the bytes the token stands for. With
    /// `special = false`, control and unknown tokens give nothing.
    pub fn token_to_piece(&self, id: u32, special: bool) -> Result<&[u8]> {
        let t = self.data(id)?;
        if !special
            && t.attr
                .intersects(TokenAttr::UNKNOWN.with(TokenAttr::CONTROL))
        {
            return Ok(&[]);
        }
        let i = id as usize;
        Ok(&self.pieces[self.piece_starts[i]..self.piece_starts[i + 1]])
    }

    fn spm_byte_token(&self, b: u8) -> Result<u32> {
        self.byte_tokens[usize::from(b)].ok_or_else(|| {
            Error::InvalidModel(format!(
                "SPM vocabulary has no byte token for 0x{b:02X} (<0x{b:02X}>)"
            ))
        })
    }

    // ---- tokenize ----

    /// `llama_tokenize`: `add_special` adds BOS/EOS as the metadata says; `parse_special` turns the
    /// text of control tokens into those tokens (user-defined tokens are always matched).
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let fragments = self.partition(text, parse_special);
        let mut out = Vec::new();
        let bos = |out: &mut Vec<u32>| -> Result<()> {
            let id = self
                .special
                .bos
                .ok_or_else(|| Error::InvalidModel("the model adds BOS but has none".into()))?;
            out.push(id);
            Ok(())
        };
        let eos = |out: &mut Vec<u32>| -> Result<()> {
            let id = self
                .special
                .eos
                .ok_or_else(|| Error::InvalidModel("the model adds EOS but has none".into()))?;
            out.push(id);
            Ok(())
        };
        if add_special && self.add_bos {
            bos(&mut out)?;
        }
        match self.kind {
            VocabKind::Spm => {
                let mut prev_special = true;
                let mut buf = String::new();
                for f in fragments {
                    match f {
                        Fragment::Text(a, b) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push('\u{2581}');
                            }
                            escape_whitespace_into(&text[a..b], &mut buf);
                            spm::tokenize(self, &buf, &mut out)?;
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            VocabKind::Bpe => {
                let mut session = bpe::Session::default();
                let mut escaped = String::new();
                for f in fragments {
                    match f {
                        Fragment::Text(a, b) => {
                            let frag = &text[a..b];
                            let frag = if self.escape_whitespaces {
                                escaped.clear();
                                escape_whitespace_into(frag, &mut escaped);
                                escaped.as_str()
                            } else {
                                frag
                            };
                            self.bpe_fragment(&mut session, frag, &mut out)?;
                        }
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && self.add_eos {
            eos(&mut out)?;
        }
        Ok(out)
    }

    /// `llm_tokenizer_bpe_session::tokenize` for one text fragment.
    fn bpe_fragment(
        &self,
        session: &mut bpe::Session,
        text: &str,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let cpts: Vec<u32> = text.chars().map(u32::from).collect();
        let offsets = unicode::split(&cpts, &self.splitters)?;
        let byte_encode = self.pre.is_some_and(|c| c.byte_encode);
        let mut byte = 0usize;
        for len in offsets {
            let start = byte;
            let mut it = text[start..].char_indices();
            byte = it.nth(len).map_or(text.len(), |(i, _)| start + i);
            let raw = &text[start..byte];
            if byte_encode {
                session.word_bytes(self, raw.as_bytes(), out)?;
            } else {
                session.word_utf8(self, raw, out)?;
            }
        }
        Ok(())
    }

    /// `tokenizer_st_partition`: splits the text at special tokens, longest first.
    ///
    /// llama.cpp scans the text once per special token; a token that does not occur in the text cannot
    /// occur in any fragment of it, so one Aho-Corasick pass first picks the tokens that do occur and
    /// only those are applied, in llama.cpp's order.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Fragment::Text(0, text.len()));
        let Some(matcher) = &self.special_matcher else {
            return frags;
        };
        let mut occurs = vec![false; self.special_cache.len()];
        let mut any = false;
        for m in matcher.find_overlapping_iter(text) {
            occurs[m.pattern().as_usize()] = true;
            any = true;
        }
        if !any {
            return frags;
        }
        let skip = TokenAttr::CONTROL.with(TokenAttr::UNKNOWN);
        let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r');
        let bytes = text.as_bytes();
        for (i, &id) in self.special_cache.iter().enumerate() {
            if !occurs[i] {
                continue;
            }
            let data = &self.tokens[id as usize];
            if !parse_special && data.attr.intersects(skip) {
                continue;
            }
            let needle = &*data.text;
            let lstrip = data.attr.intersects(TokenAttr::LSTRIP);
            let rstrip = data.attr.intersects(TokenAttr::RSTRIP);
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                let Fragment::Text(start, end) = f else {
                    next.push(f);
                    continue;
                };
                let mut cur = start;
                let mut matched = false;
                while let Some(pos) = text[cur..end].find(needle) {
                    let m = cur + pos;
                    matched = true;
                    let mut left_end = m;
                    if lstrip {
                        while left_end > cur && is_space(bytes[left_end - 1]) {
                            left_end -= 1;
                        }
                    }
                    if left_end > cur {
                        next.push(Fragment::Text(cur, left_end));
                    }
                    next.push(Fragment::Token(id));
                    cur = m + needle.len();
                    if rstrip {
                        while cur < end && is_space(bytes[cur]) {
                            cur += 1;
                        }
                    }
                    if cur >= end {
                        break;
                    }
                }
                if !matched {
                    next.push(f);
                } else if cur < end {
                    next.push(Fragment::Text(cur, end));
                }
            }
            frags = next;
        }
        frags
    }

    // ---- detokenize ----

    /// `llama_detokenize(remove_special, unparse_special)` as bytes (may hold invalid UTF-8 where a
    /// multi-byte character is cut).
    pub fn detokenize_bytes(
        &self,
        ids: &[u32],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>> {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if remove_special
            && self.add_bos
            && let Some((&first, rest)) = ids.split_first()
            && Some(first) == self.special.bos
        {
            remove_space = false;
            ids = rest;
        }
        if remove_special
            && self.add_eos
            && let Some((&last, rest)) = ids.split_last()
            && Some(last) == self.special.eos
        {
            ids = rest;
        }
        let mut text = Vec::new();
        for &id in ids {
            let mut piece = self.token_to_piece(id, unparse_special)?;
            if remove_space && let Some(rest) = piece.strip_prefix(b" ") {
                piece = rest;
            }
            remove_space = false;
            text.extend_from_slice(piece);
        }
        if self.clean_spaces {
            clean_up_spaces(&mut text);
        }
        Ok(text)
    }

    /// `llama_vocab::detokenize(tokens, special)` (what `common_detokenize` returns), with invalid
    /// UTF-8 replaced by U+FFFD.
    pub fn detokenize(&self, ids: &[u32], special: bool) -> Result<String> {
        let bytes = self.detokenize_bytes(ids, false, special)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}

/// `llama_escape_whitespace`: ' ' → U+2581.
fn escape_whitespace_into(s: &str, out: &mut String) {
    for c in s.chars() {
        out.push(if c == ' ' { '\u{2581}' } else { c });
    }
}

/// `llama_decode_text`: byte-level BPE text back to bytes; a character outside the byte map is
/// written as llama.cpp does, `[UNK_BYTE_0x<utf8 hex><whole token text>]`.
fn decode_byte_level(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match unicode::byte_decoded(u32::from(c)) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
}

/// `token_to_byte`: the byte of a `<0xXX>` token (strtol on characters 3..5, as llama.cpp).
fn token_to_byte(text: &str) -> Result<u8> {
    let b = text.as_bytes();
    if b.len() < 3 {
        return Err(Error::InvalidModel(format!(
            "byte token {text:?} is not of the form <0xXX>"
        )));
    }
    let digits = &b[3..b.len().min(5)];
    let mut v: u32 = 0;
    for &d in digits {
        match char::from(d).to_digit(16) {
            Some(x) => v = v * 16 + x,
            None => break,
        }
    }
    // At most two hex digits, so it fits.
    Ok(v as u8)
}

/// The `clean_spaces` passes of `llama_vocab::impl::detokenize`.
fn clean_up_spaces(text: &mut Vec<u8>) {
    // " ?", " !", " .", " ," lose the space.
    let t = std::mem::take(text);
    let mut out: Vec<u8> = Vec::with_capacity(t.len());
    for (i, &x) in t.iter().enumerate() {
        if i > 0 && t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            out.pop();
        }
        out.push(x);
    }
    // " ' " → "'": a lone apostrophe between spaces loses both spaces. llama.cpp works in place and
    // zeroes the skipped space, so that space no longer counts as the "previous" character.
    let t = out;
    let mut out: Vec<u8> = Vec::with_capacity(t.len());
    let mut zeroed = None;
    let mut i = 0;
    while i < t.len() {
        let x = t[i];
        let prev = if i == 0 || zeroed == Some(i - 1) {
            0
        } else {
            t[i - 1]
        };
        if i > 0 && x == b'\'' && i + 1 < t.len() && prev == b' ' && t[i + 1] == b' ' {
            out.pop();
            out.push(x);
            zeroed = Some(i + 1);
            i += 2;
            continue;
        }
        out.push(x);
        i += 1;
    }
    // " 's", " 'm", " 're", " 've" lose the space.
    let t = out;
    let mut out: Vec<u8> = Vec::with_capacity(t.len());
    for (i, &x) in t.iter().enumerate() {
        if i > 0 && t[i - 1] == b' ' && x == b'\'' && i + 1 < t.len() {
            let x1 = t[i + 1];
            let x2 = t.get(i + 2).copied();
            // " 's", " 'm"; " 're", " 've" (" 't", " 'd", " 'll" keep their space).
            if x1 == b's' || x1 == b'm' || ((x1 == b'r' || x1 == b'v') && x2 == Some(b'e')) {
                out.pop();
            }
        }
        out.push(x);
    }
    *text = out;
}
