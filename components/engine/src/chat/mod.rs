//! Chat templates: render a conversation into a prompt, in the Hugging Face Jinja dialect.
//!
//! GGUF files carry the model's template in `tokenizer.chat_template` (Jinja, as written for
//! transformers). It is rendered with minijinja set up the way transformers sets up Jinja2
//! (`_compile_jinja_template`): `trim_blocks` and `lstrip_blocks`, loop controls, `raise_exception`,
//! `strftime_now`, and a `tojson` that is Python's `json.dumps`. Python string/dict/list methods
//! (`.strip()`, `.split()`, `.startswith()`, `.items()`, …) come from minijinja-contrib's pycompat.
//! Models without a template get a built-in one chosen from the architecture and vocabulary.
//!
//! Errors never panic: a template that does not parse is `Error::InvalidModel`; one that fails
//! while rendering (including its own `raise_exception`) is `Error::InvalidArgument`; both carry
//! minijinja's message.

mod builtin;
mod pyjson;
mod strftime;

use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, State, Value};

use crate::gguf::Gguf;
use crate::{Error, Result};

/// The template's name inside its environment.
const NAME: &str = "chat_template";
/// Context variable that pins `strftime_now` to a given time (for reproducible renders).
const NOW_VAR: &str = "__chord_now_unix";
/// Default bound on template work per render (minijinja fuel, about one unit per instruction; some
/// ten million a second): real templates use thousands per message, though some are quadratic in
/// the number of messages (Gemma 4's: ~4M for 1000 messages); a hostile one stops within seconds.
pub const DEFAULT_FUEL: u64 = 100_000_000;

/// One conversation turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user`, `assistant`, or whatever else the template understands.
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl Message {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Everything a render can take besides the messages.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions<'a> {
    /// End the prompt with the opening of an assistant turn.
    pub add_generation_prompt: bool,
    /// Text of the BOS token, as `bos_token`.
    pub bos_token: &'a str,
    /// Text of the EOS token, as `eos_token`.
    pub eos_token: &'a str,
    /// The time `strftime_now` formats (Unix seconds, UTC); `None`: now.
    pub now_unix: Option<i64>,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    builtin: Option<&'static str>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("builtin", &self.builtin)
            .field("source_len", &self.source.len())
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Names of the built-in templates.
    pub const BUILTINS: &'static [&'static str] =
        &["chatml", "llama2", "llama3", "gemma", "phi3", "mistral"];

    /// Compiles a Jinja chat template (e.g. a GGUF's `tokenizer.chat_template`).
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_fuel(Some(DEFAULT_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", pyjson::tojson);
        env.add_filter("length", length);
        env.add_filter("count", length);
        env.add_test("iterable", is_iterable);
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| Error::InvalidModel(format!("chat template does not parse: {e}")))?;
        Ok(ChatTemplate {
            env,
            source: source.to_owned(),
            builtin: None,
        })
    }

    /// A built-in template by name (see [`ChatTemplate::BUILTINS`]).
    pub fn builtin(name: &str) -> Result<Self> {
        let (name, src) = builtin::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown built-in chat template {name:?} (known: {})",
                    Self::BUILTINS.join(", ")
                ))
            })?;
        let mut t = Self::new(src)?;
        t.builtin = Some(name);
        Ok(t)
    }

    /// The template for a model: its own `template` if it has one (a built-in name is accepted
    /// too), else a built-in chosen by [`builtin_for`].
    pub fn for_model(
        template: Option<&str>,
        arch: &str,
        has_token: impl Fn(&str) -> bool,
    ) -> Result<Self> {
        match template {
            Some(t) if Self::BUILTINS.contains(&t) => Self::builtin(t),
            Some(t) if !t.trim().is_empty() => Self::new(t),
            _ => Self::builtin(builtin_for(arch, has_token)),
        }
    }

    /// The template for a parsed GGUF: `tokenizer.chat_template`, else a built-in chosen from
    /// `general.architecture` and `tokenizer.ggml.tokens`.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self> {
        let template = gguf.metadata.get_str("tokenizer.chat_template")?;
        let arch = gguf.architecture()?;
        let tokens = gguf
            .metadata
            .get_str_array("tokenizer.ggml.tokens")?
            .unwrap_or_default();
        Self::for_model(template, arch, |t| tokens.iter().any(|x| x == t))
    }

    /// Sets the bound on work per render ([`DEFAULT_FUEL`]; `None`: unbounded).
    pub fn set_fuel(&mut self, fuel: Option<u64>) {
        self.env.set_fuel(fuel);
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The built-in name, if this is a built-in template.
    pub fn builtin_name(&self) -> Option<&'static str> {
        self.builtin
    }

    /// Renders `messages` (transformers' `apply_chat_template(..., tokenize=False)`).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        bos: &str,
        eos: &str,
    ) -> Result<String> {
        self.render_with(
            messages,
            &RenderOptions {
                add_generation_prompt,
                bos_token: bos,
                eos_token: eos,
                now_unix: None,
            },
        )
    }

    /// [`ChatTemplate::render`] with every option.
    pub fn render_with(&self, messages: &[Message], opts: &RenderOptions<'_>) -> Result<String> {
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_iter([
                    ("role", Value::from(m.role.as_str())),
                    ("content", Value::from(m.content.as_str())),
                ])
            })
            .collect();
        let mut ctx = vec![
            ("messages", Value::from(msgs)),
            (
                "add_generation_prompt",
                Value::from(opts.add_generation_prompt),
            ),
            ("bos_token", Value::from(opts.bos_token)),
            ("eos_token", Value::from(opts.eos_token)),
            // transformers always passes these, as None when there are none.
            ("tools", Value::from(())),
            ("documents", Value::from(())),
        ];
        if let Some(t) = opts.now_unix {
            ctx.push((NOW_VAR, Value::from(t)));
        }
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| Error::InvalidModel(format!("chat template: {e}")))?;
        tmpl.render(Value::from_iter(ctx))
            .map_err(|e| Error::InvalidArgument(format!("chat template failed: {e}")))
    }
}

/// The built-in template for a model without one. By architecture first where it is decisive
/// (Gemma, Phi-3, Qwen), then by the vocabulary's marker tokens (what llama.cpp's
/// `llm_chat_detect_template` looks for in template text), then llama → Llama 2, and ChatML,
/// llama.cpp's own fallback, for everything else.
pub fn builtin_for(arch: &str, has_token: impl Fn(&str) -> bool) -> &'static str {
    match arch {
        "gemma" | "gemma2" | "gemma3" | "gemma3n" | "gemma-embedding" => return "gemma",
        "phi3" => return "phi3",
        "qwen" | "qwen2" | "qwen2moe" | "qwen2vl" | "qwen3" | "qwen3moe" => return "chatml",
        _ => {}
    }
    if has_token("<|im_start|>") {
        "chatml"
    } else if has_token("<|start_header_id|>") {
        "llama3"
    } else if has_token("<start_of_turn>") {
        "gemma"
    } else if has_token("<|user|>") && has_token("<|end|>") {
        "phi3"
    } else if has_token("[INST]") {
        "mistral"
    } else if arch == "llama" {
        "llama2"
    } else {
        "chatml"
    }
}

/// Print like Jinja2 under Python: `None`, `True`, `False` (minijinja would print `none`, `true`).
fn python_formatter(
    out: &mut minijinja::Output,
    state: &State,
    value: &Value,
) -> std::result::Result<(), minijinja::Error> {
    let word = match value.kind() {
        ValueKind::None => Some("None"),
        ValueKind::Bool if value.is_true() => Some("True"),
        ValueKind::Bool => Some("False"),
        _ => None,
    };
    match word {
        Some(w) => out.write_str(w).map_err(minijinja::Error::from),
        None => minijinja::escape_formatter(out, state, value),
    }
}

/// `length` as in Jinja2, where an undefined value has length 0 (`tools|length` on a template that
/// never got `tools`); minijinja would fail.
fn length(v: &Value) -> std::result::Result<usize, minijinja::Error> {
    if v.is_undefined() {
        return Ok(0);
    }
    minijinja::filters::length(v)
}

/// `is iterable` as in Python: `None` is not (minijinja iterates it as empty), and tool-calling
/// templates test `tools is iterable` on the `None` that transformers passes.
fn is_iterable(v: &Value) -> bool {
    !v.is_none() && v.try_iter().is_ok()
}

fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        format!("raise_exception: {msg}"),
    ))
}

fn strftime_now(state: &State, format: String) -> String {
    let now = state
        .lookup(NOW_VAR)
        .and_then(|v| v.as_i64())
        .unwrap_or_else(strftime::now_unix);
    strftime::strftime(&format, now)
}

#[cfg(test)]
mod tests;
