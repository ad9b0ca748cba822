//! Code point classification and pre-tokenizer splitting, after llama.cpp's src/unicode.cpp.
//!
//! Splitting works on code point offsets exactly like `unicode_regex_split`: a list of chunk lengths
//! starts as the whole text and each pre-tokenizer expression splits every chunk further. The
//! expressions llama.cpp implements by hand (GPT-2, LLaMA 3, Qwen 2, Qwen 3.5, newline runs) are ported
//! by hand; any other expression runs through `fancy-regex` over llama.cpp's "collapsed" text, where
//! every non-ASCII code point stands for its category, so `\p{L}` etc. mean what llama.cpp's tables say.

use super::unicode_data::{ASCII_FLAGS, RANGE_FLAGS, RANGE_STARTS, WHITESPACE};
use crate::{Error, Result};

/// Category bits, as in llama.cpp's `unicode_cpt_flags`.
pub(crate) const CAT_UNDEFINED: u16 = 0x0001;
pub(crate) const CAT_NUMBER: u16 = 0x0002;
pub(crate) const CAT_LETTER: u16 = 0x0004;
pub(crate) const CAT_MARK: u16 = 0x0010;
pub(crate) const CAT_PUNCTUATION: u16 = 0x0020;
pub(crate) const CAT_SYMBOL: u16 = 0x0040;
pub(crate) const WHITESPACE_BIT: u16 = 0x0100;

const MAX_CODEPOINTS: u32 = 0x110000;

/// The flags of one code point; `Flags(0)` is llama.cpp's "position out of range" value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flags(pub(crate) u16);

impl Flags {
    #[inline]
    pub(crate) fn is_letter(self) -> bool {
        self.0 & CAT_LETTER != 0
    }
    #[inline]
    pub(crate) fn is_number(self) -> bool {
        self.0 & CAT_NUMBER != 0
    }
    #[inline]
    pub(crate) fn is_mark(self) -> bool {
        self.0 & CAT_MARK != 0
    }
    #[inline]
    pub(crate) fn is_whitespace(self) -> bool {
        self.0 & WHITESPACE_BIT != 0
    }
    #[inline]
    pub(crate) fn any(self) -> bool {
        self.0 != 0
    }
    /// The category bits alone (`category_flag`).
    #[inline]
    pub(crate) fn category(self) -> u16 {
        self.0 & 0xFF
    }
}

fn range_flags(cpt: u32) -> u16 {
    // The last range starting at or before `cpt` (the first starts at 0).
    let i = RANGE_STARTS.partition_point(|&s| s <= cpt);
    u16::from(RANGE_FLAGS[i.saturating_sub(1)])
}

/// `unicode_cpt_flags_from_cpt`.
#[inline]
pub(crate) fn cpt_flags(cpt: u32) -> Flags {
    if cpt < 128 {
        return Flags(ASCII_FLAGS[cpt as usize]);
    }
    if cpt >= MAX_CODEPOINTS {
        return Flags(CAT_UNDEFINED);
    }
    let ws = if WHITESPACE.binary_search(&cpt).is_ok() {
        WHITESPACE_BIT
    } else {
        0
    };
    Flags(range_flags(cpt) | ws)
}

/// `unicode_len_utf8`: the sequence length announced by a lead byte (1 for stray continuation bytes).
#[inline]
pub(crate) fn utf8_len(lead: u8) -> usize {
    const LOOKUP: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LOOKUP[usize::from(lead >> 4)]
}

/// GPT-2's `bytes_to_unicode`: every byte as a printable code point (`unicode_byte_to_utf8_map`).
const fn build_byte_to_cpt() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut n = 0u32;
    let mut b = 0usize;
    while b < 256 {
        let printable =
            (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        if printable {
            t[b] = b as u32;
        } else {
            t[b] = 256 + n;
            n += 1;
        }
        b += 1;
    }
    t
}

const BYTE_TO_CPT: [u32; 256] = build_byte_to_cpt();

/// The code point GPT-2's byte encoding gives `byte`.
#[inline]
pub(crate) fn byte_encoded_cpt(byte: u8) -> u32 {
    BYTE_TO_CPT[usize::from(byte)]
}

/// The byte-level BPE encoding of `byte`, appended to `out`.
#[inline]
pub(crate) fn push_byte_encoded(out: &mut String, byte: u8) {
    // Every entry is a valid scalar value below 0x144.
    if let Some(c) = char::from_u32(BYTE_TO_CPT[usize::from(byte)]) {
        out.push(c);
    }
}

const fn build_cpt_to_byte() -> [u16; 0x144] {
    let mut t = [u16::MAX; 0x144];
    let mut b = 0usize;
    while b < 256 {
        t[BYTE_TO_CPT[b] as usize] = b as u16;
        b += 1;
    }
    t
}

static CPT_TO_BYTE: [u16; 0x144] = build_cpt_to_byte();

/// Inverse of [`push_byte_encoded`] for one code point (`unicode_utf8_to_byte`).
#[inline]
pub(crate) fn byte_decoded(cpt: u32) -> Option<u8> {
    let i = usize::try_from(cpt).ok()?;
    CPT_TO_BYTE.get(i).and_then(|&b| u8::try_from(b).ok())
}

/// One pre-tokenizer expression, compiled.
pub(crate) enum Splitter {
    /// `unicode_regex_split_custom_gpt2`.
    Gpt2,
    /// `unicode_regex_split_custom_llama3`.
    Llama3,
    /// `unicode_regex_split_custom_qwen2`.
    Qwen2,
    /// `unicode_regex_split_custom_qwen35`.
    Qwen35,
    /// `unicode_regex_split_custom_newlines`.
    Newlines,
    /// A general expression matched against the collapsed text.
    Collapsed(Box<fancy_regex::Regex>),
    /// A general expression without categories, matched against the code points themselves.
    Plain(Box<fancy_regex::Regex>),
}

impl std::fmt::Debug for Splitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Splitter::Gpt2 => f.write_str("Gpt2"),
            Splitter::Llama3 => f.write_str("Llama3"),
            Splitter::Qwen2 => f.write_str("Qwen2"),
            Splitter::Qwen35 => f.write_str("Qwen35"),
            Splitter::Newlines => f.write_str("Newlines"),
            Splitter::Collapsed(r) => write!(f, "Collapsed({})", r.as_str()),
            Splitter::Plain(r) => write!(f, "Plain({})", r.as_str()),
        }
    }
}

/// `\p{..}` names llama.cpp collapses, with the category each stands for (`k_ucat_enum`).
const UCAT_ENUM: [(&str, u16); 10] = [
    ("\\p{N}", CAT_NUMBER),
    ("\\p{L}", CAT_LETTER),
    ("\\p{P}", CAT_PUNCTUATION),
    ("\\p{M}", CAT_MARK),
    ("\\p{S}", CAT_SYMBOL),
    ("\\p{Lu}", CAT_LETTER),
    ("\\p{Ll}", CAT_LETTER),
    ("\\p{Lt}", CAT_LETTER),
    ("\\p{Lm}", CAT_LETTER),
    ("\\p{Lo}", CAT_LETTER),
];

/// The stand-in code point of a category in collapsed text (`k_ucat_cpt`), and the ASCII members of
/// the category in Rust regex class syntax (`k_ucat_map`).
fn ucat_collapsed(cat: u16) -> Option<(char, &'static str)> {
    Some(match cat {
        CAT_NUMBER => ('\u{D1}', "0-9"),
        CAT_LETTER => ('\u{D2}', "A-Za-z"),
        CAT_PUNCTUATION => ('\u{D3}', r"!-#%-*,-/:-;?-@\[-\]_\{\}"),
        CAT_MARK => ('\u{D4}', ""),
        CAT_SYMBOL => ('\u{D5}', r"\$\+<->\^`\|\~"),
        _ => return None,
    })
}

/// Compiles one expression of a pre-tokenizer (the dispatch of `unicode_regex_split_custom`, then the
/// collapsing of `unicode_regex_split`).
pub(crate) fn compile(expr: &str) -> Result<Splitter> {
    match expr {
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)" => {
            return Ok(Splitter::Gpt2);
        }
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
        | "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" =>
        {
            return Ok(Splitter::Llama3);
        }
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" =>
        {
            return Ok(Splitter::Qwen2);
        }
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" =>
        {
            return Ok(Splitter::Qwen35);
        }
        "[^\\n]+|[\\n]+" => return Ok(Splitter::Newlines),
        _ => {}
    }
    let build = |pattern: &str| {
        fancy_regex::Regex::new(pattern)
            .map(Box::new)
            .map_err(|e| Error::Unsupported(format!("pre-tokenizer expression {expr:?}: {e:?}")))
    };
    if UCAT_ENUM.iter().any(|(name, _)| expr.contains(name)) {
        if !expr.is_ascii() {
            return Err(Error::Unsupported(format!(
                "pre-tokenizer expression {expr:?} mixes unicode categories and non-ASCII characters"
            )));
        }
        Ok(Splitter::Collapsed(build(&collapse_expr(expr))?))
    } else {
        Ok(Splitter::Plain(build(&ascii_classes(expr))?))
    }
}

/// Rewrites `\p{X}` into the collapsed form, tracking `[...]` like llama.cpp does.
fn collapse_expr(expr: &str) -> String {
    let b = expr.as_bytes();
    let mut out = String::with_capacity(expr.len() * 2);
    let mut inside = false;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'[' && (i == 0 || b[i - 1] != b'\\') {
            out.push('[');
            inside = true;
            i += 1;
            continue;
        }
        if inside && b[i] == b']' && i > 0 && b[i - 1] != b'\\' {
            out.push(']');
            inside = false;
            i += 1;
            continue;
        }
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1] == b'p'
            && b[i + 2] == b'{'
            && let Some(close) = expr[i + 3..].find('}').map(|p| p + i + 3)
            && close <= i + 10
            && let Some(&(_, cat)) = UCAT_ENUM.iter().find(|(name, _)| *name == &expr[i..=close])
            && let Some((stand_in, ascii)) = ucat_collapsed(cat)
        {
            if !inside {
                out.push('[');
            }
            out.push_str(&format!("\\x{{{:X}}}", u32::from(stand_in)));
            out.push_str(ascii);
            if !inside {
                out.push(']');
            }
            i = close + 1;
            continue;
        }
        // The expression is ASCII here, so bytes are chars.
        out.push(char::from(b[i]));
        i += 1;
    }
    out
}

/// std::regex (ECMAScript, "C" locale) classes are ASCII; Rust's `\d` is Unicode. The text never holds
/// non-ASCII whitespace (it is replaced by U+000B first), so only `\d`/`\D` need rewriting.
fn ascii_classes(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut inside = false;
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('d') => out.push_str(if inside { "0-9" } else { "[0-9]" }),
                Some('D') if !inside => out.push_str("[^0-9]"),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '[' if !inside => {
                inside = true;
                out.push(c);
            }
            ']' if inside => {
                inside = false;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Collapsed form of one code point (the `text_collapsed` loop of `unicode_regex_split`).
fn collapse_cpt(cpt: u32) -> char {
    if cpt < 128 {
        return char::from_u32(cpt).unwrap_or('\u{D0}');
    }
    let f = cpt_flags(cpt);
    if f.is_whitespace() {
        return '\u{0B}';
    }
    ucat_collapsed(f.category()).map_or('\u{D0}', |(c, _)| c)
}

/// Splits `cpts` (the whole text) by `splitters` in turn; returns chunk lengths in code points.
pub(crate) fn split(cpts: &[u32], splitters: &[Splitter]) -> Result<Vec<usize>> {
    let mut offsets = vec![cpts.len()];
    let mut collapsed: Option<String> = None;
    let mut plain: Option<String> = None;
    for s in splitters {
        offsets = match s {
            Splitter::Gpt2 => split_gpt2(cpts, &offsets),
            Splitter::Llama3 => split_llama3(cpts, &offsets, false),
            Splitter::Qwen2 => split_llama3(cpts, &offsets, true),
            Splitter::Qwen35 => split_qwen35(cpts, &offsets),
            Splitter::Newlines => split_newlines(cpts, &offsets),
            Splitter::Collapsed(re) => {
                let text = collapsed
                    .get_or_insert_with(|| cpts.iter().map(|&c| collapse_cpt(c)).collect());
                split_regex(text, re, &offsets)?
            }
            Splitter::Plain(re) => {
                let text = plain.get_or_insert_with(|| {
                    cpts.iter()
                        .map(|&c| {
                            if c > 0x7F && cpt_flags(c).is_whitespace() {
                                '\u{0B}'
                            } else {
                                char::from_u32(c).unwrap_or('\u{FFFD}')
                            }
                        })
                        .collect()
                });
                split_regex(text, re, &offsets)?
            }
        };
    }
    Ok(offsets)
}

/// `unicode_regex_split_stl`: inside every chunk, each match and each gap between matches becomes a
/// chunk. `text` has one char per code point, so byte offsets convert to code point counts by counting.
fn split_regex(text: &str, re: &fancy_regex::Regex, offsets: &[usize]) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut byte = 0usize;
    for &len in offsets {
        let chunk_start = byte;
        let mut it = text[chunk_start..].char_indices();
        let chunk_end = it.nth(len).map_or(text.len(), |(i, _)| chunk_start + i);
        byte = chunk_end;
        let chunk = &text[chunk_start..chunk_end];
        // Code point position of the end of the last emitted piece, and its byte offset.
        let (mut prev_cp, mut prev_byte) = (0usize, 0usize);
        let count = |from: usize, to: usize| chunk[from..to].chars().count();
        for m in re.find_iter(chunk) {
            let m =
                m.map_err(|e| Error::InvalidArgument(format!("pre-tokenizer regex failed: {e}")))?;
            let start_cp = prev_cp + count(prev_byte, m.start());
            if start_cp > prev_cp {
                out.push(start_cp - prev_cp);
            }
            let end_cp = start_cp + count(m.start(), m.end());
            // An empty match still splits (llama.cpp records a zero-length chunk, which yields nothing).
            if end_cp > start_cp {
                out.push(end_cp - start_cp);
            }
            prev_cp = end_cp;
            prev_byte = m.end();
        }
        if prev_cp < len {
            out.push(len - prev_cp);
        }
    }
    Ok(out)
}

const OUT_OF_RANGE: u32 = 0xFFFF_FFFF;

/// Position helpers shared by the hand-written splitters: one chunk `[ini, end)` of `cpts`.
struct Chunk<'a> {
    cpts: &'a [u32],
    ini: usize,
    end: usize,
    prev_end: usize,
}

impl Chunk<'_> {
    #[inline]
    fn cpt(&self, pos: usize) -> u32 {
        if self.ini <= pos && pos < self.end {
            self.cpts[pos]
        } else {
            OUT_OF_RANGE
        }
    }
    #[inline]
    fn flags(&self, pos: usize) -> Flags {
        if self.ini <= pos && pos < self.end {
            cpt_flags(self.cpts[pos])
        } else {
            Flags(0)
        }
    }
    /// `_add_token`: closes a piece at `end`, returns its length.
    #[inline]
    fn add(&mut self, end: usize, out: &mut Vec<usize>) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            out.push(len);
        }
        self.prev_end = end;
        len
    }
}

fn chunks(offsets: &[usize]) -> impl Iterator<Item = (usize, usize)> + '_ {
    offsets.iter().scan(0usize, |start, &len| {
        let ini = *start;
        *start += len;
        Some((ini, ini + len))
    })
}

const fn is_ascii_lower(cpt: u32, c: u8) -> bool {
    cpt == c as u32 || cpt == (c - 0x20) as u32
}

/// `unicode_regex_split_custom_gpt2`:
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
fn split_gpt2(cpts: &[u32], offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    for (ini, end) in chunks(offsets) {
        let mut c = Chunk {
            cpts,
            ini,
            end,
            prev_end: ini,
        };
        let mut pos = ini;
        while pos < end {
            let cpt = c.cpt(pos);
            let flags = c.flags(pos);

            if cpt == u32::from(b'\'') && pos + 1 < end {
                let next = c.cpt(pos + 1);
                if [b's', b't', b'm', b'd']
                    .iter()
                    .any(|&x| next == u32::from(x))
                {
                    pos += c.add(pos + 2, &mut out);
                    continue;
                }
                if pos + 2 < end {
                    let next2 = c.cpt(pos + 2);
                    let pair = |a: u8, b: u8| next == u32::from(a) && next2 == u32::from(b);
                    if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
                        pos += c.add(pos + 3, &mut out);
                        continue;
                    }
                }
            }

            let space = cpt == u32::from(b' ');
            let mut flags2 = if space { c.flags(pos + 1) } else { flags };
            if flags2.is_letter() {
                pos += usize::from(space);
                while flags2.is_letter() {
                    pos += 1;
                    flags2 = c.flags(pos);
                }
                c.add(pos, &mut out);
                continue;
            }
            if flags2.is_number() {
                pos += usize::from(space);
                while flags2.is_number() {
                    pos += 1;
                    flags2 = c.flags(pos);
                }
                c.add(pos, &mut out);
                continue;
            }
            let other =
                |f: Flags| !(f.is_whitespace() || f.is_letter() || f.is_number()) && f.any();
            if other(flags2) {
                pos += usize::from(space);
                while other(flags2) {
                    pos += 1;
                    flags2 = c.flags(pos);
                }
                c.add(pos, &mut out);
                continue;
            }

            let mut num_ws = 0;
            while c.flags(pos + num_ws).is_whitespace() {
                num_ws += 1;
            }
            // \s+(?!\S)
            if num_ws > 1 && c.cpt(pos + num_ws) != OUT_OF_RANGE {
                pos += num_ws - 1;
                c.add(pos, &mut out);
                continue;
            }
            // \s+
            if num_ws > 0 {
                pos += num_ws;
                c.add(pos, &mut out);
                continue;
            }
            // no match
            pos += 1;
            c.add(pos, &mut out);
        }
    }
    out
}

/// `unicode_regex_split_custom_llama3` (`single_digit == false`):
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
/// and `unicode_regex_split_custom_qwen2` (`single_digit == true`), the same with `\p{N}`.
fn split_llama3(cpts: &[u32], offsets: &[usize], single_digit: bool) -> Vec<usize> {
    split_llama3_like(cpts, offsets, single_digit, false)
}

/// `unicode_regex_split_custom_qwen35`: as Qwen 2, but letter runs take marks (`[\p{L}\p{M}]+`).
fn split_qwen35(cpts: &[u32], offsets: &[usize]) -> Vec<usize> {
    split_llama3_like(cpts, offsets, true, true)
}

fn split_llama3_like(
    cpts: &[u32],
    offsets: &[usize],
    single_digit: bool,
    marks: bool,
) -> Vec<usize> {
    let is_cr_lf = |c: u32| c == u32::from(b'\r') || c == u32::from(b'\n');
    let wordish = |f: Flags| f.is_letter() || (marks && f.is_mark());
    let mut out = Vec::with_capacity(offsets.len());
    for (ini, end) in chunks(offsets) {
        let mut c = Chunk {
            cpts,
            ini,
            end,
            prev_end: ini,
        };
        let mut pos = ini;
        while pos < end {
            let cpt = c.cpt(pos);
            let flags = c.flags(pos);

            // (?i:'s|'t|'re|'ve|'m|'ll|'d); llama.cpp lowercases with its table, which for these
            // letters is ASCII lowercasing (checked when the tables were generated).
            if cpt == u32::from(b'\'') && pos + 1 < end {
                let next = c.cpt(pos + 1);
                if [b's', b't', b'm', b'd']
                    .iter()
                    .any(|&x| is_ascii_lower(next, x))
                {
                    pos += c.add(pos + 2, &mut out);
                    continue;
                }
                if pos + 2 < end {
                    let next2 = c.cpt(pos + 2);
                    let pair = |a: u8, b: u8| is_ascii_lower(next, a) && is_ascii_lower(next2, b);
                    if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
                        pos += c.add(pos + 3, &mut out);
                        continue;
                    }
                }
            }

            // [^\r\n\p{L}\p{N}]?\p{L}+   (Qwen 3.5: [\p{L}\p{M}]+)
            if !(is_cr_lf(cpt) || flags.is_number())
                && (wordish(flags) || wordish(c.flags(pos + 1)))
            {
                pos += 1;
                while wordish(c.flags(pos)) {
                    pos += 1;
                }
                c.add(pos, &mut out);
                continue;
            }

            // \p{N}{1,3}   (Qwen: \p{N})
            if flags.is_number() {
                if single_digit {
                    pos += 1;
                    c.add(pos, &mut out);
                    continue;
                }
                let mut run_start = pos;
                while c.flags(pos).is_number() {
                    pos += 1;
                    if pos - run_start >= 3 {
                        c.add(pos, &mut out);
                        run_start = pos;
                    }
                }
                c.add(pos, &mut out);
                continue;
            }

            // <space>?[^\s\p{L}\p{N}]+[\r\n]*   (llama.cpp tests the first flags, not flags2, for "any")
            let space = cpt == u32::from(b' ');
            let mut flags2 = if space { c.flags(pos + 1) } else { flags };
            let other = |f: Flags| !(f.is_whitespace() || wordish(f) || f.is_number());
            if other(flags2) && flags.any() {
                pos += usize::from(space);
                while other(flags2) && flags2.any() {
                    pos += 1;
                    flags2 = c.flags(pos);
                }
                while is_cr_lf(c.cpt(pos)) {
                    pos += 1;
                }
                c.add(pos, &mut out);
                continue;
            }

            let mut num_ws = 0;
            let mut last_end_r_or_n = 0;
            while c.flags(pos + num_ws).is_whitespace() {
                if is_cr_lf(c.cpt(pos + num_ws)) {
                    last_end_r_or_n = pos + num_ws + 1;
                }
                num_ws += 1;
            }
            // \s*[\r\n]+
            if last_end_r_or_n > 0 {
                pos = last_end_r_or_n;
                c.add(pos, &mut out);
                continue;
            }
            // \s+(?!\S)
            if num_ws > 1 && c.cpt(pos + num_ws) != OUT_OF_RANGE {
                pos += num_ws - 1;
                c.add(pos, &mut out);
                continue;
            }
            // \s+
            if num_ws > 0 {
                pos += num_ws;
                c.add(pos, &mut out);
                continue;
            }
            pos += 1;
            c.add(pos, &mut out);
        }
    }
    out
}

/// `unicode_regex_split_custom_newlines`: `[^\n]+|[\n]+`.
fn split_newlines(cpts: &[u32], offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    for (ini, end) in chunks(offsets) {
        let mut pos = ini;
        while pos < end {
            let nl = cpts[pos] == u32::from(b'\n');
            let run = pos;
            while pos < end && (cpts[pos] == u32::from(b'\n')) == nl {
                pos += 1;
            }
            out.push(pos - run);
        }
    }
    out
}
