//! Built-in chat templates for models whose GGUF has no `tokenizer.chat_template`.
//!
//! Each renders what llama.cpp's `llm_chat_apply_template` (src/llama-chat.cpp) produces for the
//! same format, written here as Jinja so that one engine renders everything. Like llama.cpp's, they
//! do not print `bos_token`: the tokenizer adds BOS per the model's metadata.

/// ChatML (Qwen, SmolLM, …); also llama.cpp's fallback (common/chat.cpp `CHATML_TEMPLATE_SRC`).
pub(crate) const CHATML: &str = r#"{%- for message in messages -%}
{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n' -}}
{%- endif -%}"#;

/// Llama 2 chat with `<<SYS>>` system blocks (llama.cpp's `llama2-sys`). The generation prompt is
/// implicit: the model answers after `[/INST]`.
pub(crate) const LLAMA2: &str = r#"{{- '[INST] ' -}}
{%- set ns = namespace(inside=true) -%}
{%- for message in messages -%}
{%- if not ns.inside -%}
{{- '[INST] ' -}}
{%- set ns.inside = true -%}
{%- endif -%}
{%- if message.role == 'system' -%}
{{- '<<SYS>>\n' + message.content + '\n<</SYS>>\n\n' -}}
{%- elif message.role == 'user' -%}
{{- message.content + ' [/INST]' -}}
{%- else -%}
{{- message.content + '</s>' -}}
{%- set ns.inside = false -%}
{%- endif -%}
{%- endfor -%}"#;

/// Llama 3 / 3.1 / 3.2 headers (llama.cpp's `llama3`).
pub(crate) const LLAMA3: &str = r#"{%- for message in messages -%}
{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\n\n' + (message.content | trim) + '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
{%- endif -%}"#;

/// Gemma 1/2/3 turns (llama.cpp's `gemma`): no system role, so system text is folded into the
/// first user turn followed by a blank line, as the official template does; `assistant` is `model`.
pub(crate) const GEMMA: &str = r#"{%- set ns = namespace(system='') -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{%- set ns.system = ns.system + (message.content | trim) -%}
{%- else -%}
{%- set role = 'model' if message.role == 'assistant' else message.role -%}
{{- '<start_of_turn>' + role + '\n' -}}
{%- if ns.system != '' and role != 'model' -%}
{{- ns.system + '\n\n' -}}
{%- set ns.system = '' -%}
{%- endif -%}
{{- (message.content | trim) + '<end_of_turn>\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<start_of_turn>model\n' -}}
{%- endif -%}"#;

/// Phi-3 (llama.cpp's `phi3`).
pub(crate) const PHI3: &str = r#"{%- for message in messages -%}
{{- '<|' + message.role + '|>\n' + message.content + '<|end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|assistant|>\n' -}}
{%- endif -%}"#;

/// Mistral v3 (`[INST]` as control tokens; llama.cpp's `mistral-v3`). The generation prompt is
/// implicit after `[/INST]`.
pub(crate) const MISTRAL: &str = r#"{%- set ns = namespace(inside=false) -%}
{%- for message in messages -%}
{%- if not ns.inside -%}
{{- '[INST] ' -}}
{%- set ns.inside = true -%}
{%- endif -%}
{%- if message.role == 'system' -%}
{{- message.content + '\n\n' -}}
{%- elif message.role == 'user' -%}
{{- message.content + '[/INST]' -}}
{%- else -%}
{{- ' ' + (message.content | trim) + '</s>' -}}
{%- set ns.inside = false -%}
{%- endif -%}
{%- endfor -%}"#;

/// Names accepted by [`super::ChatTemplate::builtin`], with their sources.
pub(crate) const ALL: &[(&str, &str)] = &[
    ("chatml", CHATML),
    ("llama2", LLAMA2),
    ("llama3", LLAMA3),
    ("gemma", GEMMA),
    ("phi3", PHI3),
    ("mistral", MISTRAL),
];
