//! BPE pre-tokenizers by `tokenizer.ggml.pre` name: the expressions of `llm_tokenizer_bpe`'s constructor
//! and the flags `llama_vocab::impl::load` sets per name (src/llama-vocab.cpp).

// Expression lists shared by several pre-tokenizers, verbatim from llama.cpp.
const GPT2: &str = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const LLAMA3: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN35: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const BLOOM: &str = " ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{964}\u{6D4}\u{60C})]+";
const GPT4O: &str = "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const DEEPSEEK3: &[&str] = &[
    "\\p{N}{1,3}",
    "[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
];
const STARCODER: &[&str] = &["\\p{N}", GPT2];
const NEWLINES: &[&str] = &["[^\\n]+|[\\n]+"];

/// What one `tokenizer.ggml.pre` value means for a BPE vocabulary.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreConfig {
    /// llama.cpp's `LLAMA_VOCAB_PRE_TYPE_*` name, lowercase (for messages and special cases).
    pub kind: PreKind,
    /// The pre-tokenizer expressions, applied in order.
    pub exprs: &'static [&'static str],
    /// GPT-2 byte-level encoding of the words (false: SPM-style BPE on raw UTF-8).
    pub byte_encode: bool,
    /// Overrides of llama.cpp's BPE defaults (`clean_spaces = true`, the rest false).
    pub clean_spaces: bool,
    pub ignore_merges: bool,
    pub add_bos: bool,
    pub add_sep: bool,
    pub escape_whitespaces: bool,
    /// The default BOS id is cleared (chatglm).
    pub no_default_bos: bool,
}

/// The pre-tokenizer types this port implements (a subset of `llama_vocab_pre_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreKind {
    Default,
    Llama3,
    Jais2,
    Dbrx,
    DeepseekLlm,
    Deepseek3Llm,
    Spark25,
    DeepseekCoder,
    Falcon,
    Starcoder,
    Gpt2,
    Qwen2,
    Qwen35,
    Bloom,
    Chatglm4,
    Viking,
    Tekken,
    Gpt4o,
    Bailingmoe,
    SeedCoder,
    Ufakzeka,
    Laguna,
    ExaoneMoe,
    Gemma4,
    SarvamMoe,
    Minicpm5,
}

const fn cfg(kind: PreKind, exprs: &'static [&'static str]) -> PreConfig {
    PreConfig {
        kind,
        exprs,
        byte_encode: true,
        clean_spaces: true,
        ignore_merges: false,
        add_bos: false,
        add_sep: false,
        escape_whitespaces: false,
        no_default_bos: false,
    }
}

impl PreConfig {
    const fn no_clean(mut self) -> Self {
        self.clean_spaces = false;
        self
    }
    const fn ignore_merges(mut self) -> Self {
        self.ignore_merges = true;
        self
    }
    const fn add_bos(mut self) -> Self {
        self.add_bos = true;
        self
    }
}

/// The configuration for `tokenizer.ggml.pre` = `name` (`None`/empty means llama.cpp's default),
/// or `None` when this port does not implement that pre-tokenizer.
pub(crate) fn lookup(name: &str) -> Option<PreConfig> {
    use PreKind::*;
    let llama3: &'static [&'static str] = &[LLAMA3];
    let gpt2: &'static [&'static str] = &[GPT2];
    let qwen2: &'static [&'static str] = &[QWEN2];
    Some(match name {
        "" | "default" => cfg(
            Default,
            &[
                "[\\p{P}\\$\\+<=>\\^~\\|]+",
                GPT2,
                "\\p{N}+",
                "[0-9][0-9][0-9]",
            ],
        ),
        "minicpm5" => cfg(
            Minicpm5,
            &[
                "\\p{N}{1,3}",
                "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
            ],
        )
        .ignore_merges(),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => cfg(Llama3, llama3).ignore_merges().add_bos(),
        "deepseek-llm" => cfg(
            DeepseekLlm,
            &[
                "[\r\n]",
                "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+",
                "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
                "\\s+$",
                "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
                "\\p{N}+",
            ],
        )
        .no_clean(),
        "deepseek-coder" => cfg(
            DeepseekCoder,
            &[
                "[\r\n]",
                "\\s?\\p{L}+",
                "\\s?\\p{P}+",
                "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
                "\\p{N}",
            ],
        )
        .no_clean(),
        "deepseek-v3" | "hunyuan-dense" | "hy_v4" | "joyai-llm" => {
            cfg(Deepseek3Llm, DEEPSEEK3).no_clean()
        }
        "spark2_5" => cfg(
            Spark25,
            &[
                "\\p{N}{1,3}",
                "[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+",
                "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+",
                "\\p{N}",
            ],
        )
        .no_clean(),
        "falcon" => cfg(
            Falcon,
            &[
                "[\\p{P}\\$\\+<=>\\^~\\|`]+",
                "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
                "[0-9][0-9][0-9]",
            ],
        ),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            cfg(Starcoder, STARCODER)
        }
        "command-r" | "smollm" => cfg(Starcoder, STARCODER).no_clean(),
        "mpt" | "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
        | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "olmo" | "jais" | "exaone4" => {
            cfg(Gpt2, gpt2)
        }
        "trillion" | "granite-docling" => cfg(Gpt2, gpt2).no_clean(),
        "jina-v1-en" | "jina-v2-code" | "roberta-bpe" => {
            let mut c = cfg(Gpt2, gpt2);
            c.add_sep = true;
            c
        }
        "jais-2" => cfg(
            Jais2,
            &[
                "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}",
            ],
        ),
        "gemma4" | "granite-embed-multi-311m" => {
            let mut c = cfg(Gemma4, NEWLINES);
            c.byte_encode = false;
            c.escape_whitespaces = true;
            c
        }
        "sarvam-moe" => {
            let mut c = cfg(SarvamMoe, NEWLINES).no_clean();
            c.byte_encode = false;
            c.escape_whitespaces = true;
            c
        }
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "grok-2" | "hunyuan" | "solar-open" => {
            cfg(Qwen2, qwen2).no_clean()
        }
        "megrez" | "stablelm2" => cfg(Qwen2, qwen2),
        "qwen35" => cfg(Qwen35, &[QWEN35]).no_clean(),
        "dbrx" | "smaug-bpe" => cfg(Dbrx, llama3),
        "poro-chat" => cfg(Bloom, &[BLOOM]).no_clean(),
        "bloom" | "gpt3-finnish" => cfg(Bloom, &[BLOOM]),
        "chatglm-bpe" => {
            let mut c = cfg(Chatglm4, llama3);
            c.no_default_bos = true;
            c
        }
        "glm4" | "glm5" => {
            let mut c = cfg(Chatglm4, llama3).ignore_merges();
            c.no_default_bos = true;
            c
        }
        "viking" => cfg(Viking, &[BLOOM, "\\p{N}"]).no_clean(),
        "tekken" => cfg(
            Tekken,
            &["[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
        )
        .no_clean()
        .ignore_merges()
        .add_bos(),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => cfg(Gpt4o, &[GPT4O]).no_clean(),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => cfg(
            Bailingmoe,
            &["'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"],
        )
        .no_clean(),
        "seed-coder" => cfg(
            SeedCoder,
            &["(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
        )
        .no_clean(),
        "ufakzeka" => cfg(
            Ufakzeka,
            &["[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
        )
        .no_clean(),
        "laguna" => cfg(Laguna, &["[^\\n]+|[\\n]+", QWEN2]).no_clean(),
        "exaone-moe" => cfg(
            ExaoneMoe,
            &["(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"],
        ),
        _ => return None,
    })
}

/// Every name [`lookup`] knows (for tests).
#[cfg(test)]
pub(crate) const NAMES: &[&str] = &[
    "default",
    "minicpm5",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "deepseek-llm",
    "deepseek-coder",
    "deepseek-v3",
    "hunyuan-dense",
    "hy_v4",
    "joyai-llm",
    "spark2_5",
    "falcon",
    "starcoder",
    "refact",
    "codeshell",
    "exaone",
    "minerva-7b",
    "mellum2",
    "command-r",
    "smollm",
    "mpt",
    "gpt-2",
    "phi-2",
    "jina-es",
    "jina-de",
    "gigachat",
    "jina-v2-es",
    "jina-v2-de",
    "a.x-4.0",
    "mellum",
    "modern-bert",
    "olmo",
    "jais",
    "exaone4",
    "trillion",
    "granite-docling",
    "jina-v1-en",
    "jina-v2-code",
    "roberta-bpe",
    "jais-2",
    "gemma4",
    "granite-embed-multi-311m",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "grok-2",
    "hunyuan",
    "solar-open",
    "megrez",
    "stablelm2",
    "qwen35",
    "dbrx",
    "smaug-bpe",
    "poro-chat",
    "bloom",
    "gpt3-finnish",
    "chatglm-bpe",
    "glm4",
    "glm5",
    "viking",
    "tekken",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "minimax-m2",
    "bailingmoe",
    "bailingmoe2",
    "llada-moe",
    "seed-coder",
    "ufakzeka",
    "laguna",
    "exaone-moe",
    "sarvam-moe",
];
