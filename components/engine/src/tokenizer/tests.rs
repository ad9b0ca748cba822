//! Unit tests: the fast paths against straight ports of llama.cpp's algorithms on random text,
//! synthetic vocabularies, hostile metadata, streaming, and the Unicode tables.

use std::collections::{BinaryHeap, HashMap};
use std::path::PathBuf;

use super::*;
use crate::gguf::{GgufWriter, Value};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Deterministic xorshift generator (no dependency, reproducible failures).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Pieces random texts are made of: what pre-tokenizers and merges treat specially.
const PIECES: &[&str] = &[
    "a",
    "the",
    " the",
    "Hello",
    " world",
    "WORLD",
    "l",
    "ll",
    "'s",
    "'S",
    "'ll",
    "'Ve",
    "'re",
    "'t",
    "'d",
    "'m",
    "'",
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\n\n",
    "\r\n",
    " \n",
    "\u{3000}",
    "\u{a0}",
    "\u{2003}",
    "0",
    "12",
    "345",
    "6789",
    "1234567",
    ".",
    ",",
    "!",
    "?",
    "...",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "$",
    "+",
    "<",
    ">",
    "=",
    "^",
    "|",
    "~",
    "`",
    "-",
    "_",
    "@",
    "#",
    "%",
    "&",
    "*",
    "/",
    "\\",
    "\"",
    ";",
    ":",
    "é",
    "è",
    "ñ",
    "ü",
    "ß",
    "Ω",
    "ω",
    "\u{301}",
    "e\u{301}",
    "\u{1F7D}",
    "\u{212A}",
    "µ",
    "ﬁ",
    "нещо",
    "Български",
    "مرحبا",
    "שלום",
    "नमस्ते",
    "ไทย",
    "中文",
    "日本語",
    "こんにちは",
    "カタカナ",
    "한국어",
    "𝔘𝔫𝔦",
    "🦙",
    "🚀",
    "😶\u{200d}🌫\u{fe0f}",
    "✅",
    "👍🏽",
    "\u{200b}",
    "\u{feff}",
    "\u{0}",
    "\u{7f}",
    "\u{85}",
    "\u{2028}",
    "\u{e000}",
    "\u{10ffff}",
    "▁",
    "▁▁",
    "<",
    "<s>",
    "</s>",
    "<unk>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<0x41>",
    "[multimodal]",
    "<mask>",
];

fn random_text(rng: &mut Rng, max_pieces: usize) -> String {
    let n = rng.below(max_pieces + 1);
    let mut s = String::new();
    for _ in 0..n {
        if rng.below(40) == 0 {
            // A long run, to exercise the queue paths and long words.
            let c = ["a", " ", "\n", "1", "é", "▁", "ab", "中"][rng.below(8)];
            for _ in 0..(50 + rng.below(150)) {
                s.push_str(c);
            }
        } else {
            s.push_str(PIECES[rng.below(PIECES.len())]);
        }
    }
    s
}

fn fixtures_vocab(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/vocab")
        .join(format!("ggml-vocab-{name}.gguf"))
}

/// llama.cpp's full vocab test set (see tests/tokenizer_vocab.rs), when present on this machine.
fn llama_vocab(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("CHORD_VOCAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from("/work/ext/llama_cpp_python-0.3.36/vendor/llama.cpp/models")
        });
    let p = dir.join(format!("ggml-vocab-{name}.gguf"));
    p.is_file().then_some(p)
}

fn model_file(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("CHORD_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/models"));
    let p = dir.join(name);
    p.is_file().then_some(p)
}

fn load_path(path: &std::path::Path) -> (Gguf, Tokenizer) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let gguf = Gguf::read(&file).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    (gguf, tok)
}

// ---------------------------------------------------------------------------------------------
// Straight ports of llama.cpp (no fast paths), as oracles for the optimised code.

/// llama.cpp's `tokenizer_st_partition`, scanning for every special token.
fn ref_partition(tok: &Tokenizer, text: &str, parse_special: bool) -> Vec<Fragment> {
    let mut frags = Vec::new();
    if text.is_empty() {
        return frags;
    }
    frags.push(Fragment::Text(0, text.len()));
    let bytes = text.as_bytes();
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r');
    for &id in &tok.special_cache {
        let data = &tok.tokens[id as usize];
        if !parse_special
            && data
                .attr
                .intersects(TokenAttr::CONTROL.with(TokenAttr::UNKNOWN))
        {
            continue;
        }
        let needle = data.text.as_bytes();
        let mut next = Vec::new();
        for f in frags {
            let Fragment::Text(mut base, end) = f else {
                next.push(f);
                continue;
            };
            let mut first = true;
            loop {
                let hay = &bytes[base..end];
                let Some(pos) = hay.windows(needle.len()).position(|w| w == needle) else {
                    // Untouched, or the right remainder left after the last match.
                    if first || base < end {
                        next.push(Fragment::Text(base, end));
                    }
                    break;
                };
                first = false;
                let m = base + pos;
                let mut left_len = m - base;
                if data.attr.intersects(TokenAttr::LSTRIP) {
                    while left_len > 0 && is_space(bytes[base + left_len - 1]) {
                        left_len -= 1;
                    }
                }
                if left_len > 0 {
                    next.push(Fragment::Text(base, base + left_len));
                }
                next.push(Fragment::Token(id));
                if m + needle.len() < end {
                    let mut r = m + needle.len();
                    if data.attr.intersects(TokenAttr::RSTRIP) {
                        while r < end && is_space(bytes[r]) {
                            r += 1;
                        }
                    }
                    base = r;
                    if base == end {
                        break;
                    }
                } else {
                    break;
                }
            }
        }
        frags = next;
    }
    frags
}

/// `llm_tokenizer_spm_session::tokenize`, one queue over the whole text, with `rev_merge`.
fn ref_spm(tok: &Tokenizer, text: &str, out: &mut Vec<u32>) {
    #[derive(Clone, Copy)]
    struct Sym {
        prev: i64,
        next: i64,
        start: usize,
        n: usize,
    }
    struct Big {
        left: i64,
        right: i64,
        score: f32,
        size: usize,
    }
    impl PartialEq for Big {
        fn eq(&self, o: &Self) -> bool {
            self.cmp(o) == std::cmp::Ordering::Equal
        }
    }
    impl Eq for Big {}
    impl PartialOrd for Big {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Big {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            // comparator(l, r) = l.score < r.score || (l.score == r.score && l.left > r.left): "l below r".
            if self.score < o.score || (self.score == o.score && self.left > o.left) {
                std::cmp::Ordering::Less
            } else if o.score < self.score || (o.score == self.score && o.left > self.left) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        }
    }
    let b = text.as_bytes();
    let mut syms = Vec::new();
    let mut offs = 0;
    let mut index = 0i64;
    while offs < b.len() {
        let n = unicode::utf8_len(b[offs]).min(b.len() - offs);
        syms.push(Sym {
            prev: index - 1,
            next: if offs + n == b.len() { -1 } else { index + 1 },
            start: offs,
            n,
        });
        offs += n;
        index += 1;
    }
    let mut queue = BinaryHeap::new();
    let mut rev_merge: HashMap<Vec<u8>, (i64, i64)> = HashMap::new();
    let try_add = |syms: &Vec<Sym>,
                   queue: &mut BinaryHeap<Big>,
                   rev: &mut HashMap<Vec<u8>, (i64, i64)>,
                   l: i64,
                   r: i64| {
        if l == -1 || r == -1 {
            return;
        }
        let ls = syms[l as usize];
        let rs = syms[r as usize];
        let t = &b[ls.start..ls.start + ls.n + rs.n];
        let Some(id) = std::str::from_utf8(t)
            .ok()
            .and_then(|s| tok.text_to_token(s))
        else {
            return;
        };
        queue.push(Big {
            left: l,
            right: r,
            score: tok.tokens[id as usize].score,
            size: t.len(),
        });
        rev.insert(t.to_vec(), (l, r));
    };
    for i in 1..syms.len() as i64 {
        try_add(&syms, &mut queue, &mut rev_merge, i - 1, i);
    }
    while let Some(big) = queue.pop() {
        let l = syms[big.left as usize];
        let r = syms[big.right as usize];
        if l.n == 0 || r.n == 0 || l.n + r.n != big.size {
            continue;
        }
        syms[big.left as usize].n += r.n;
        syms[big.right as usize].n = 0;
        syms[big.left as usize].next = r.next;
        if r.next >= 0 {
            syms[r.next as usize].prev = big.left;
        }
        let prev = syms[big.left as usize].prev;
        let next = syms[big.left as usize].next;
        try_add(&syms, &mut queue, &mut rev_merge, prev, big.left);
        try_add(&syms, &mut queue, &mut rev_merge, big.left, next);
    }
    fn reseg(
        tok: &Tokenizer,
        b: &[u8],
        syms: &[Sym],
        rev: &HashMap<Vec<u8>, (i64, i64)>,
        s: Sym,
        out: &mut Vec<u32>,
    ) {
        let t = &b[s.start..s.start + s.n];
        if let Some(id) = std::str::from_utf8(t)
            .ok()
            .and_then(|s| tok.text_to_token(s))
        {
            out.push(id);
            return;
        }
        match rev.get(t) {
            None => {
                for &c in t {
                    out.push(tok.spm_byte_token(c).unwrap());
                }
            }
            Some(&(l, r)) => {
                reseg(tok, b, syms, rev, syms[l as usize], out);
                reseg(tok, b, syms, rev, syms[r as usize], out);
            }
        }
    }
    if syms.is_empty() {
        return;
    }
    let mut i = 0i64;
    while i != -1 {
        let s = syms[i as usize];
        reseg(tok, b, &syms, &rev_merge, s, out);
        i = s.next;
    }
}

/// `llm_tokenizer_bpe_session::tokenize` with a string-pair rank table, one queue per word.
fn ref_bpe_word(
    tok: &Tokenizer,
    ranks: &HashMap<(String, String), usize>,
    word: &str,
    out: &mut Vec<u32>,
) {
    let byte_encode = tok.pre.unwrap().byte_encode;
    let mut syms: Vec<(i64, i64, usize, usize)> = Vec::new(); // prev, next, start, n
    let mut offset = 0;
    let whole = tok.ignore_merges || (tok.gemma4_newlines && word.bytes().all(|b| b == b'\n'));
    if whole && tok.text_to_token(word).is_some() {
        syms.push((-1, -1, 0, word.len()));
        offset = word.len();
    }
    let b = word.as_bytes();
    let mut index = 0i64;
    while offset < b.len() {
        let n = unicode::utf8_len(b[offset]).min(b.len() - offset);
        syms.push((
            index - 1,
            if offset + n == b.len() { -1 } else { index + 1 },
            offset,
            n,
        ));
        offset += n;
        index += 1;
    }
    let s = |syms: &Vec<(i64, i64, usize, usize)>, i: i64| -> String {
        let (_, _, st, n) = syms[i as usize];
        word[st..st + n].to_string()
    };
    // (Reverse rank, Reverse left) max-heap = min (rank, left).
    let mut queue: BinaryHeap<std::cmp::Reverse<(usize, i64, i64, String)>> = BinaryHeap::new();
    let add = |syms: &Vec<(i64, i64, usize, usize)>,
               queue: &mut BinaryHeap<std::cmp::Reverse<(usize, i64, i64, String)>>,
               l: i64,
               r: i64| {
        if l == -1 || r == -1 {
            return;
        }
        let (ls, rs) = (s(syms, l), s(syms, r));
        if let Some(&rank) = ranks.get(&(ls.clone(), rs.clone())) {
            queue.push(std::cmp::Reverse((rank, l, r, ls + &rs)));
        }
    };
    for i in 1..syms.len() as i64 {
        add(&syms, &mut queue, i - 1, i);
    }
    while let Some(std::cmp::Reverse((_, l, r, text))) = queue.pop() {
        let (lsym, rsym) = (syms[l as usize], syms[r as usize]);
        if lsym.3 == 0 || rsym.3 == 0 || s(&syms, l) + &s(&syms, r) != text {
            continue;
        }
        syms[l as usize].3 += rsym.3;
        syms[r as usize].3 = 0;
        syms[l as usize].1 = rsym.1;
        if rsym.1 >= 0 {
            syms[rsym.1 as usize].0 = l;
        }
        let (prev, next) = (syms[l as usize].0, syms[l as usize].1);
        add(&syms, &mut queue, prev, l);
        add(&syms, &mut queue, l, next);
    }
    for &(_, _, st, n) in syms.iter().filter(|s| s.3 > 0) {
        let t = &word[st..st + n];
        match tok.text_to_token(t) {
            Some(id) => out.push(id),
            None => {
                for &c in t.as_bytes() {
                    let id = if byte_encode {
                        std::str::from_utf8(&[c])
                            .ok()
                            .and_then(|s| tok.text_to_token(s))
                    } else {
                        tok.text_to_token(&format!("<0x{c:02X}>"))
                    };
                    out.extend(id);
                }
            }
        }
    }
}

/// `llama_vocab::impl::tokenize` built from the reference parts above.
fn ref_tokenize(
    tok: &Tokenizer,
    ranks: &HashMap<(String, String), usize>,
    text: &str,
    add_special: bool,
    parse_special: bool,
) -> Vec<u32> {
    let frags = ref_partition(tok, text, parse_special);
    let mut out = Vec::new();
    if add_special && tok.add_bos {
        out.push(tok.special.bos.unwrap());
    }
    let mut prev_special = true;
    for f in frags {
        match f {
            Fragment::Token(id) => {
                out.push(id);
                prev_special = true;
            }
            Fragment::Text(a, b) => {
                let mut t = String::new();
                if tok.kind == VocabKind::Spm && tok.add_space_prefix && prev_special {
                    t.push(' ');
                }
                t.push_str(&text[a..b]);
                if tok.kind == VocabKind::Spm || tok.escape_whitespaces {
                    t = t.replace(' ', "\u{2581}");
                }
                if tok.kind == VocabKind::Spm {
                    ref_spm(tok, &t, &mut out);
                } else {
                    let cpts: Vec<u32> = t.chars().map(u32::from).collect();
                    let offsets = unicode::split(&cpts, &tok.splitters).unwrap();
                    let mut start = 0;
                    for len in offsets {
                        let word: String = cpts[start..start + len]
                            .iter()
                            .map(|&c| char::from_u32(c).unwrap())
                            .collect();
                        start += len;
                        let word = if tok.pre.unwrap().byte_encode {
                            let mut w = String::new();
                            for &b in word.as_bytes() {
                                unicode::push_byte_encoded(&mut w, b);
                            }
                            w
                        } else {
                            word
                        };
                        ref_bpe_word(tok, ranks, &word, &mut out);
                    }
                }
                prev_special = false;
            }
        }
    }
    if add_special && tok.add_eos {
        out.push(tok.special.eos.unwrap());
    }
    out
}

fn ref_ranks(gguf: &Gguf) -> HashMap<(String, String), usize> {
    let mut ranks = HashMap::new();
    if let Some(merges) = gguf
        .metadata
        .get_str_array("tokenizer.ggml.merges")
        .unwrap()
    {
        for (i, m) in merges.iter().enumerate() {
            if let Some(pos) = m
                .as_bytes()
                .iter()
                .skip(1)
                .position(|&b| b == b' ')
                .map(|p| p + 1)
            {
                ranks
                    .entry((m[..pos].to_string(), m[pos + 1..].to_string()))
                    .or_insert(i);
            }
        }
    }
    ranks
}

fn differential(path: &std::path::Path, n_texts: usize, seed: u64) {
    let (gguf, tok) = load_path(path);
    let ranks = ref_ranks(&gguf);
    let mut rng = Rng(seed);
    for i in 0..n_texts {
        let text = random_text(&mut rng, 24);
        for (add_special, parse_special) in [(false, false), (true, true)] {
            if add_special
                && ((tok.add_bos && tok.special.bos.is_none())
                    || (tok.add_eos && tok.special.eos.is_none()))
            {
                continue;
            }
            let got = tok.tokenize(&text, add_special, parse_special).unwrap();
            let want = ref_tokenize(&tok, &ranks, &text, add_special, parse_special);
            assert_eq!(
                got,
                want,
                "{} case {i}: {text:?} (add_special {add_special}, parse_special {parse_special})",
                path.display()
            );
        }
        // The pieces spell the text back (after the SPM space prefix; special tokens rendered).
        let ids = tok.tokenize(&text, false, false).unwrap();
        let mut bytes = Vec::new();
        for &id in &ids {
            bytes.extend_from_slice(tok.token_to_piece(id, true).unwrap());
        }
        let mut want = String::new();
        if tok.kind == VocabKind::Spm && tok.add_space_prefix && !text.is_empty() {
            want.push(' ');
        }
        want.push_str(&text);
        if tok.kind == VocabKind::Bpe && tok.pre.unwrap().byte_encode {
            assert_eq!(
                String::from_utf8_lossy(&bytes),
                want,
                "{} round trip {i}",
                path.display()
            );
        }
    }
}

#[test]
fn differential_committed_vocabs() {
    for (i, name) in ["llama-spm", "gpt-2", "llama-bpe"].iter().enumerate() {
        differential(&fixtures_vocab(name), 300, 0x9E37_79B9_7F4A_7C15 ^ i as u64);
    }
}

#[test]
fn differential_llama_cpp_vocabs() {
    let names = [
        "gemma-4",
        "qwen35",
        "deepseek-llm",
        "falcon",
        "phi-3",
        "command-r",
        "mpt",
        "deepseek-coder",
    ];
    let mut ran = 0;
    for (i, name) in names.iter().enumerate() {
        if let Some(p) = llama_vocab(name) {
            differential(&p, 150, 0xD1B5_4A32_D192_ED03 ^ i as u64);
            ran += 1;
        }
    }
    eprintln!(
        "differential: {ran} of {} llama.cpp vocabularies present",
        names.len()
    );
}

#[test]
fn differential_real_models() {
    for (i, name) in [
        "gemma-3-270m-q4_k_m.gguf",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
    ]
    .iter()
    .enumerate()
    {
        if let Some(p) = model_file(name) {
            differential(&p, 150, 0x2545_F491_4F6C_DD1D ^ i as u64);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers and Unicode

#[test]
fn every_pre_tokenizer_compiles() {
    for name in pre::NAMES {
        let cfg = pre::lookup(name).unwrap_or_else(|| panic!("{name} not found"));
        for e in cfg.exprs {
            if let Err(err) = unicode::compile(e) {
                panic!("{name}: {err}");
            }
        }
    }
    assert!(pre::lookup("no-such-pre-tokenizer").is_none());
}

#[test]
fn unicode_flags_match_llama_cpp_categories() {
    use unicode::cpt_flags;
    assert!(cpt_flags('A' as u32).is_letter());
    assert!(cpt_flags('é' as u32).is_letter());
    assert!(cpt_flags('中' as u32).is_letter());
    assert!(cpt_flags('5' as u32).is_number());
    assert!(cpt_flags('½' as u32).is_number());
    assert!(cpt_flags(0x301).is_mark());
    for ws in [
        0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x200A, 0x2028, 0x2029,
        0x202F, 0x205F, 0x3000,
    ] {
        assert!(cpt_flags(ws).is_whitespace(), "{ws:#x}");
    }
    assert!(!cpt_flags(0x200B).is_whitespace());
    assert_eq!(cpt_flags(0x110000).0, unicode::CAT_UNDEFINED);
    assert_eq!(cpt_flags('$' as u32).category(), unicode::CAT_SYMBOL);
    assert_eq!(cpt_flags('!' as u32).category(), unicode::CAT_PUNCTUATION);
    // Every code point has some flag (so "flags != 0" means "in range", as llama.cpp assumes).
    for c in (0..0x110000).step_by(97) {
        assert!(cpt_flags(c).any(), "{c:#x}");
    }
}

#[test]
fn gpt2_byte_encoding_round_trips() {
    for b in 0..=255u8 {
        let c = unicode::byte_encoded_cpt(b);
        assert_eq!(unicode::byte_decoded(c), Some(b));
    }
    assert_eq!(unicode::byte_encoded_cpt(b' '), 0x120); // 'Ġ'
    assert_eq!(unicode::byte_encoded_cpt(b'\n'), 0x10A); // 'Ċ'
    assert_eq!(unicode::byte_decoded(0x144), None);
}

#[test]
fn collapsed_regex_rewrites_categories() {
    let Splitter::Collapsed(re) = unicode::compile("[\\p{P}\\$\\+<=>\\^~\\|]+").unwrap() else {
        panic!()
    };
    assert_eq!(
        re.as_str(),
        "[\\x{D3}!-#%-*,-/:-;?-@\\[-\\]_\\{\\}\\$\\+<=>\\^~\\|]+"
    );
    let Splitter::Collapsed(re) = unicode::compile("\\s?\\p{L}+").unwrap() else {
        panic!()
    };
    assert_eq!(re.as_str(), "\\s?[\\x{D2}A-Za-z]+");
}

// ---------------------------------------------------------------------------------------------
// Synthetic vocabularies

/// A GGUF with just a tokenizer.
fn vocab_gguf(model: &str, tokens: &[&str], types: &[i32], extra: Vec<(&str, Value)>) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::String("llama".into()));
    w.kv("tokenizer.ggml.model", Value::String(model.into()));
    w.kv(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(
            tokens.iter().map(|s| s.to_string()).collect(),
        )),
    );
    w.kv(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(types.to_vec())),
    );
    for (k, v) in extra {
        w.kv(k, v);
    }
    w.to_bytes()
}

fn build(bytes: &[u8]) -> Result<Tokenizer> {
    Tokenizer::from_gguf(&Gguf::read(bytes)?)
}

/// A small SPM vocabulary: <unk> <s> </s>, byte tokens, and a few pieces with scores.
fn spm_vocab(extra: Vec<(&str, Value)>) -> Vec<u8> {
    let mut toks: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        toks.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let pieces = ["▁", "a", "b", "ab", "▁ab", "▁a", "c", "bc", "<tag>"];
    let piece_types = [1, 1, 1, 1, 1, 1, 1, 1, 4];
    toks.extend(pieces.iter().map(|s| s.to_string()));
    types.extend(piece_types);
    let mut scores = vec![0.0f32; toks.len()];
    let base = 259;
    for (i, s) in [-1.0, -2.0, -2.0, -0.5, -0.1, -0.3, -2.0, -0.4, 0.0]
        .iter()
        .enumerate()
    {
        scores[base + i] = *s;
    }
    let refs: Vec<&str> = toks.iter().map(|s| s.as_str()).collect();
    let mut kv = vec![("tokenizer.ggml.scores", Value::Array(Array::F32(scores)))];
    kv.extend(extra);
    vocab_gguf("llama", &refs, &types, kv)
}

#[test]
fn spm_synthetic() {
    let tok = build(&spm_vocab(vec![])).unwrap();
    assert_eq!(tok.kind(), VocabKind::Spm);
    assert_eq!((tok.bos(), tok.eos()), (Some(1), Some(2)));
    assert!(tok.add_bos() && !tok.add_eos() && tok.add_space_prefix());
    let id = |s: &str| tok.text_to_token(s).unwrap();
    // "ab" → " ab" → "▁ab" (score -0.1 beats "▁a" -0.3 and "ab" -0.5).
    assert_eq!(tok.tokenize("ab", true, false).unwrap(), vec![1, id("▁ab")]);
    // "abc": ▁ab wins first, then "c" stays alone ("bc" needs the b).
    assert_eq!(
        tok.tokenize("abc", false, false).unwrap(),
        vec![id("▁ab"), id("c")]
    );
    // Unknown characters fall back to byte tokens.
    assert_eq!(
        tok.tokenize("é", false, false).unwrap(),
        vec![id("▁"), id("<0xC3>"), id("<0xA9>")]
    );
    // User-defined tokens are matched even without parse_special; control tokens only with it.
    assert_eq!(
        tok.tokenize("a<tag>b", false, false).unwrap(),
        vec![id("▁a"), id("<tag>"), id("▁"), id("b")]
    );
    assert!(!tok.tokenize("a</s>", false, false).unwrap().contains(&2));
    assert_eq!(
        tok.tokenize("a</s>", false, true).unwrap(),
        vec![id("▁a"), 2]
    );
    // Pieces.
    assert_eq!(tok.token_to_piece(id("▁ab"), false).unwrap(), b" ab");
    assert_eq!(tok.token_to_piece(id("<0xC3>"), false).unwrap(), &[0xC3]);
    assert_eq!(tok.token_to_piece(2, false).unwrap(), b"");
    assert_eq!(tok.token_to_piece(2, true).unwrap(), b"</s>");
    assert_eq!(tok.token_to_piece(0, true).unwrap(), b"<unk>");
    // Detokenize strips the leading space of the first piece (add_space_prefix), unless BOS leads.
    let ids = tok.tokenize("ab é", true, false).unwrap();
    assert_eq!(tok.detokenize(&ids, false).unwrap(), " ab é");
    // remove_special drops the BOS, and then (as in llama.cpp) keeps the first piece's space.
    assert_eq!(
        tok.detokenize_bytes(&ids, true, false).unwrap(),
        b" ab \xC3\xA9"
    );
    assert_eq!(tok.detokenize(&ids[1..], false).unwrap(), "ab é");
    assert!(tok.is_eog(2));
    assert!(!tok.is_eog(1));
    // The metadata can switch things off.
    let tok = build(&spm_vocab(vec![
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        ("tokenizer.ggml.add_eos_token", Value::Bool(true)),
        ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
    ]))
    .unwrap();
    assert_eq!(tok.tokenize("ab", true, false).unwrap(), vec![id("ab"), 2]);
    assert_eq!(tok.tokenize("", true, false).unwrap(), vec![2]);
    assert_eq!(tok.tokenize("", false, false).unwrap(), Vec::<u32>::new());
}

#[test]
fn spm_strip_attributes_for_phi3() {
    // Phi-3 by name: special tokens eat the whitespace after them, except <unk>, <s>, <|endoftext|>.
    let mut toks = vec![
        "<unk>",
        "<s>",
        "</s>",
        "<|endoftext|>",
        "<|user|>",
        "▁",
        "a",
        "▁a",
    ];
    let mut types = vec![2, 3, 3, 3, 4, 1, 1, 1];
    let bytes: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
    toks.extend(bytes.iter().map(|s| s.as_str()));
    types.extend(std::iter::repeat_n(6, 256));
    let v = vocab_gguf(
        "llama",
        &toks,
        &types,
        vec![("general.name", Value::String("Phi3 mini".into()))],
    );
    let tok = build(&v).unwrap();
    let user = tok.text_to_token("<|user|>").unwrap();
    assert!(tok.token_attr(user).unwrap().intersects(TokenAttr::RSTRIP));
    assert!(!tok.token_attr(1).unwrap().intersects(TokenAttr::RSTRIP));
    // "<|user|>  \n a": the whitespace after the token is dropped, and the text after a special
    // token gets the SPM space prefix: "▁a".
    let got = tok.tokenize("<|user|>  \n a", false, false).unwrap();
    assert_eq!(got, vec![user, tok.text_to_token("▁a").unwrap()]);
    assert_eq!(
        tok.tokenize("<s> a", false, true).unwrap(),
        vec![
            1,
            tok.text_to_token("▁").unwrap(),
            tok.text_to_token("▁a").unwrap()
        ]
    );
    // A Phi-3 vocabulary without "</s>" is rejected, as llama.cpp's `token_to_id.at` throws.
    let v = vocab_gguf(
        "llama",
        &["<unk>", "<s>", "<|endoftext|>", "a"],
        &[2, 3, 3, 1],
        vec![("general.name", Value::String("phi-3".into()))],
    );
    assert!(matches!(build(&v), Err(Error::InvalidModel(_))));
}

/// A small byte-level BPE vocabulary (all 256 byte characters plus a few merges).
fn bpe_vocab(pre: &str, extra: Vec<(&str, Value)>) -> Vec<u8> {
    let mut toks: Vec<String> = (0..=255u8)
        .map(|b| {
            let mut s = String::new();
            unicode::push_byte_encoded(&mut s, b);
            s
        })
        .collect();
    let mut types = vec![1; 256];
    for (t, ty) in [
        ("Ġh", 1),
        ("Ġhe", 1),
        ("ll", 1),
        ("Ġhell", 1),
        ("Ġhello", 1),
        ("<|endoftext|>", 3),
        ("<|im_end|>", 3),
        ("<reponame>", 3),
    ] {
        toks.push(t.into());
        types.push(ty);
    }
    let merges = ["Ġ h", "Ġh e", "l l", "Ġhe ll", "Ġhell o"];
    let refs: Vec<&str> = toks.iter().map(|s| s.as_str()).collect();
    let mut kv = vec![
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        (
            "tokenizer.ggml.merges",
            Value::Array(Array::String(
                merges.iter().map(|s| s.to_string()).collect(),
            )),
        ),
    ];
    kv.extend(extra);
    vocab_gguf("gpt2", &refs, &types, kv)
}

#[test]
fn bpe_synthetic() {
    let tok = build(&bpe_vocab("gpt-2", vec![])).unwrap();
    assert_eq!(tok.kind(), VocabKind::Bpe);
    let id = |s: &str| tok.text_to_token(s).unwrap();
    assert_eq!(
        tok.tokenize(" hello", false, false).unwrap(),
        vec![id("Ġhello")]
    );
    assert_eq!(
        tok.tokenize(" hellx", false, false).unwrap(),
        vec![id("Ġhell"), id("x")]
    );
    assert_eq!(
        tok.tokenize("hello", false, false).unwrap(),
        vec![id("h"), id("e"), id("ll"), id("o")]
    );
    // Defaults for gpt2 without ids: BOS = EOS = 11; add_bos false.
    assert_eq!((tok.bos(), tok.eos()), (Some(11), Some(11)));
    assert!(!tok.add_bos());
    // EOT and EOG found by text, FIM repo too (and it ends generation, as in llama.cpp).
    assert_eq!(tok.eot(), Some(id("<|im_end|>")));
    assert!(
        tok.is_eog(id("<|endoftext|>"))
            && tok.is_eog(id("<|im_end|>"))
            && tok.is_eog(id("<reponame>"))
    );
    assert_eq!(tok.special_tokens().fim_rep, Some(id("<reponame>")));
    // Control tokens parse only with parse_special.
    assert_eq!(
        tok.tokenize("<|im_end|>", false, true).unwrap(),
        vec![id("<|im_end|>")]
    );
    assert_ne!(
        tok.tokenize("<|im_end|>", false, false).unwrap(),
        vec![id("<|im_end|>")]
    );
    // Detokenize: byte-level decoding and clean_spaces (gpt-2 cleans " ," and " 's").
    let ids = tok.tokenize("a , b 's c 't", false, false).unwrap();
    assert_eq!(tok.detokenize(&ids, false).unwrap(), "a, b's c 't");
    // Byte pieces of a split multi-byte character.
    let ids = tok.tokenize("é", false, false).unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(tok.token_to_piece(ids[0], false).unwrap(), &[0xC3]);
    // Metadata ids.
    let tok = build(&bpe_vocab(
        "llama-bpe",
        vec![
            ("tokenizer.ggml.bos_token_id", Value::U32(256)),
            ("tokenizer.ggml.eos_token_id", Value::U32(999_999)),
        ],
    ))
    .unwrap();
    // llama-bpe adds BOS; an out-of-range EOS id keeps the default (11).
    assert!(tok.add_bos());
    assert_eq!(
        tok.tokenize(" hello", true, false).unwrap(),
        vec![256, tok.text_to_token("Ġhello").unwrap()]
    );
    assert_eq!(tok.eos(), Some(11));
}

#[test]
fn clean_spaces_follows_llama_cpp_in_place_passes() {
    let clean = |s: &str| {
        let mut v = s.as_bytes().to_vec();
        clean_up_spaces(&mut v);
        String::from_utf8(v).unwrap()
    };
    assert_eq!(clean("Hello , world !"), "Hello, world!");
    assert_eq!(clean("a ' b"), "a'b");
    // llama.cpp zeroes the skipped space in place, so the next " ' " does not see it.
    assert_eq!(clean("a ' ' b"), "a'' b");
    assert_eq!(
        clean("I 'm, you 're, they 've, it 's"),
        "I'm, you're, they've, it's"
    );
    assert_eq!(clean("don 't, I 'd, we 'll"), "don 't, I 'd, we 'll");
    assert_eq!(clean(" ."), ".");
    assert_eq!(clean(""), "");
}

// ---------------------------------------------------------------------------------------------
// Hostile metadata

#[test]
fn hostile_metadata_is_an_error() {
    let err = |v: Vec<u8>| build(&v).err().unwrap_or_else(|| panic!("accepted"));
    // No tokenizer at all.
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::String("llama".into()));
    assert!(matches!(err(w.to_bytes()), Error::InvalidModel(_)));
    // Unknown model, no vocab, unsupported pre-tokenizer.
    assert!(matches!(
        err(vocab_gguf("bert", &["a"], &[1], vec![])),
        Error::Unsupported(_)
    ));
    assert!(matches!(
        err(vocab_gguf("none", &["a"], &[1], vec![])),
        Error::Unsupported(_)
    ));
    assert!(matches!(
        err(bpe_vocab("kimi-k2-ish", vec![])),
        Error::Unsupported(_)
    ));
    // Empty vocabulary.
    assert!(matches!(
        err(vocab_gguf("llama", &[], &[], vec![])),
        Error::InvalidModel(_)
    ));
    // Wrong types.
    let mut w = GgufWriter::new();
    w.kv("tokenizer.ggml.model", Value::String("llama".into()));
    w.kv(
        "tokenizer.ggml.tokens",
        Value::Array(Array::U32(vec![1, 2])),
    );
    assert!(matches!(err(w.to_bytes()), Error::InvalidModel(_)));
    let mut w = GgufWriter::new();
    w.kv("tokenizer.ggml.model", Value::U32(3));
    assert!(matches!(err(w.to_bytes()), Error::InvalidModel(_)));
    assert!(matches!(
        err(vocab_gguf(
            "llama",
            &["a", "b"],
            &[1, 1],
            vec![(
                "tokenizer.ggml.scores",
                Value::Array(Array::String(vec!["x".into()]))
            )]
        )),
        Error::InvalidModel(_)
    ));
    // Mismatched lengths: fewer scores or types than tokens.
    assert!(matches!(
        err(vocab_gguf(
            "llama",
            &["a", "b"],
            &[1, 1],
            vec![("tokenizer.ggml.scores", Value::Array(Array::F32(vec![0.0])))]
        )),
        Error::InvalidModel(_)
    ));
    assert!(matches!(
        err(vocab_gguf("llama", &["a", "b", "c"], &[1, 1], vec![])),
        Error::InvalidModel(_)
    ));
    let mut w = GgufWriter::new();
    w.kv("tokenizer.ggml.model", Value::String("llama".into()));
    w.kv(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(vec!["a".into()])),
    );
    w.kv(
        "tokenizer.ggml.token_type",
        Value::Array(Array::String(vec!["x".into()])),
    );
    assert!(matches!(err(w.to_bytes()), Error::InvalidModel(_)));
    // BPE without merges, or with merges of the wrong type.
    assert!(matches!(
        err(vocab_gguf("gpt2", &["a"], &[1], vec![])),
        Error::InvalidModel(_)
    ));
    assert!(matches!(
        err(vocab_gguf(
            "gpt2",
            &["a"],
            &[1],
            vec![("tokenizer.ggml.merges", Value::Array(Array::I32(vec![1])))]
        )),
        Error::InvalidModel(_)
    ));
    // Special ids of the wrong type or negative.
    assert!(matches!(
        err(spm_vocab(vec![(
            "tokenizer.ggml.bos_token_id",
            Value::String("1".into())
        )])),
        Error::InvalidModel(_)
    ));
    assert!(matches!(
        err(spm_vocab(vec![(
            "tokenizer.ggml.eos_token_id",
            Value::I32(-1)
        )])),
        Error::InvalidModel(_)
    ));
    assert!(matches!(
        err(spm_vocab(vec![(
            "tokenizer.ggml.add_bos_token",
            Value::U8(1)
        )])),
        Error::InvalidModel(_)
    ));
    // A byte token whose text is not <0xXX>.
    assert!(matches!(
        err(vocab_gguf(
            "llama",
            &["<unk>", "<s>", "</s>", "<0"],
            &[2, 3, 3, 6],
            vec![]
        )),
        Error::InvalidModel(_)
    ));
}

#[test]
fn hostile_use_is_an_error() {
    let tok = build(&spm_vocab(vec![])).unwrap();
    let n = tok.n_vocab() as u32;
    assert!(matches!(
        tok.token_to_piece(n, false),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        tok.token_to_piece(u32::MAX, true),
        Err(Error::InvalidArgument(_))
    ));
    assert!(
        tok.token_text(n).is_err() && tok.token_attr(n).is_err() && tok.token_score(n).is_err()
    );
    assert!(matches!(
        tok.detokenize(&[1, n], false),
        Err(Error::InvalidArgument(_))
    ));
    let mut dec = StreamDecoder::new(false);
    assert!(dec.push(&tok, n).is_err());
    assert!(!tok.is_eog(u32::MAX) && !tok.is_control(u32::MAX));

    // An SPM vocabulary without byte tokens cannot spell an unknown character.
    let v = vocab_gguf(
        "llama",
        &["<unk>", "<s>", "</s>", "▁", "a"],
        &[2, 3, 3, 1, 1],
        vec![],
    );
    let tok = build(&v).unwrap();
    assert_eq!(tok.tokenize("a", false, false).unwrap(), vec![3, 4]);
    assert!(matches!(
        tok.tokenize("é", false, false),
        Err(Error::InvalidModel(_))
    ));

    // A BPE vocabulary whose BOS is out of range and whose default (11) is too: adding BOS fails.
    let v = vocab_gguf(
        "gpt2",
        &["a", "b"],
        &[1, 1],
        vec![
            (
                "tokenizer.ggml.merges",
                Value::Array(Array::String(vec!["a b".into()])),
            ),
            ("tokenizer.ggml.bos_token_id", Value::U32(7)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        ],
    );
    let tok = build(&v).unwrap();
    assert_eq!(tok.bos(), None);
    assert!(matches!(
        tok.tokenize("ab", true, false),
        Err(Error::InvalidModel(_))
    ));
    assert_eq!(tok.tokenize("ab", false, false).unwrap(), vec![0, 1]);
}

// ---------------------------------------------------------------------------------------------
// Streaming

#[test]
fn stream_holds_split_characters() {
    let tok = load_path(&fixtures_vocab("llama-spm")).1;
    let byte = |b: u8| tok.text_to_token(&format!("<0x{b:02X}>")).unwrap();
    // 🦙 = F0 9F A6 99, one byte token each.
    let mut dec = StreamDecoder::new(false);
    assert_eq!(dec.push(&tok, byte(0xF0)).unwrap(), "");
    assert!(dec.has_pending());
    assert_eq!(dec.push(&tok, byte(0x9F)).unwrap(), "");
    assert_eq!(dec.push(&tok, byte(0xA6)).unwrap(), "");
    assert_eq!(dec.push(&tok, byte(0x99)).unwrap(), "🦙");
    assert!(!dec.has_pending());
    // A normal token after a partial character completes nothing: the partial one is invalid.
    let hello = tok.text_to_token("▁Hello").unwrap();
    assert_eq!(dec.push(&tok, byte(0xE4)).unwrap(), "");
    assert_eq!(dec.push(&tok, hello).unwrap(), "\u{FFFD} Hello");
    // A dangling partial character at the end becomes one replacement character.
    assert_eq!(dec.push(&tok, byte(0xE4)).unwrap(), "");
    assert_eq!(dec.push(&tok, byte(0xB8)).unwrap(), "");
    assert_eq!(dec.finish(), "\u{FFFD}");
    assert!(!dec.has_pending());
    // Bytes that can never start a character come out at once.
    assert_eq!(dec.push(&tok, byte(0xFF)).unwrap(), "\u{FFFD}");
    assert_eq!(dec.push(&tok, byte(0x80)).unwrap(), "\u{FFFD}");
    // Control tokens render only when asked.
    assert_eq!(dec.push(&tok, 2).unwrap(), "");
    let mut dec = StreamDecoder::new(true);
    assert_eq!(dec.push(&tok, 2).unwrap(), "</s>");
}

#[test]
fn stream_equals_lossy_decoding_of_all_pieces() {
    let tok = load_path(&fixtures_vocab("gpt-2")).1;
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    for _ in 0..300 {
        // Random tokens, biased to the byte tokens that split characters.
        let ids: Vec<u32> = (0..rng.below(40))
            .map(|_| {
                if rng.below(2) == 0 {
                    rng.below(256) as u32
                } else {
                    rng.below(tok.n_vocab()) as u32
                }
            })
            .collect();
        let mut dec = StreamDecoder::new(true);
        let mut streamed = String::new();
        let mut bytes = Vec::new();
        for &id in &ids {
            let piece = dec.push(&tok, id).unwrap();
            streamed += &piece;
            bytes.extend_from_slice(tok.token_to_piece(id, true).unwrap());
        }
        streamed += &dec.finish();
        assert_eq!(streamed, String::from_utf8_lossy(&bytes));
    }
    // Real text split into single-byte pieces streams back unchanged.
    let text = "naïve café — 日本語 🦙🚀 نص";
    let ids = tok.tokenize(text, false, false).unwrap();
    let mut dec = StreamDecoder::new(false);
    let mut out = String::new();
    for &id in &ids {
        let s = dec.push(&tok, id).unwrap();
        // Never a replacement character mid-stream for valid input.
        assert!(!s.contains('\u{FFFD}'));
        out += &s;
    }
    out += &dec.finish();
    assert_eq!(out, text);
}

#[test]
fn equal_priorities_merge_leftmost_first() {
    // SPM: "aa" is a token, "aaa" is not; equal scores everywhere, so the leftmost pair merges first.
    let v = vocab_gguf(
        "llama",
        &["<unk>", "<s>", "</s>", "a", "aa"],
        &[2, 3, 3, 1, 1],
        vec![("tokenizer.ggml.add_space_prefix", Value::Bool(false))],
    );
    let tok = build(&v).unwrap();
    let ranks = HashMap::new();
    for n in [3, 5, 47, 48, 49, 101] {
        let text = "a".repeat(n);
        let mut want = vec![4; n / 2];
        if n % 2 == 1 {
            want.push(3);
        }
        assert_eq!(tok.tokenize(&text, false, false).unwrap(), want, "spm {n}");
        assert_eq!(
            ref_tokenize(&tok, &ranks, &text, false, false),
            want,
            "spm reference {n}"
        );
    }
    // BPE: the same with one merge "a a" (and a letter run is one word).
    let v = vocab_gguf(
        "gpt2",
        &["a", "aa"],
        &[1, 1],
        vec![
            ("tokenizer.ggml.pre", Value::String("gpt-2".into())),
            (
                "tokenizer.ggml.merges",
                Value::Array(Array::String(vec!["a a".into()])),
            ),
        ],
    );
    let tok = build(&v).unwrap();
    for n in [3, 5, 47, 48, 49, 101] {
        let text = "a".repeat(n);
        let mut want = vec![1; n / 2];
        if n % 2 == 1 {
            want.push(0);
        }
        assert_eq!(tok.tokenize(&text, false, false).unwrap(), want, "bpe {n}");
    }
}
