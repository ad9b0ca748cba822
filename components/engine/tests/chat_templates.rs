//! Chat templates against fixtures: llama.cpp's rendered chat prompts (SmolLM2's GGUF template,
//! Gemma 3's standard turn format) and Python Jinja2's renderings of dialect-exercising templates.
//! Fixtures and their provenance: tests/fixtures/chat/README.md.

use std::path::PathBuf;

use chord_engine::Error;
use chord_engine::chat::{ChatTemplate, Message, RenderOptions};
use serde_json::Value as Json;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

fn read_json(rel: &str) -> Json {
    let text = std::fs::read_to_string(fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn messages(j: &Json) -> Vec<Message> {
    j.as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

/// The chat cases of `<model>_dev_prompts.json` (which holds `messages`), checked against the
/// same-named case's `prompt` in `<model>_dev.json`. Returns (name, messages, prompt).
fn chat_cases(model: &str) -> Vec<(String, Vec<Message>, String)> {
    let prompts = read_json(&format!("reference/{model}_dev_prompts.json"));
    let dev = read_json(&format!("reference/{model}_dev.json"));
    let mut out = Vec::new();
    for p in prompts.as_array().unwrap() {
        let Some(msgs) = p.get("messages") else {
            continue;
        };
        let name = p["name"].as_str().unwrap().to_string();
        let case = dev["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == p["name"])
            .unwrap_or_else(|| panic!("{model}: no dev case named {name}"));
        let prompt = case["prompt"].as_str().unwrap().to_string();
        assert_eq!(prompt, p["prompt"].as_str().unwrap(), "{model}/{name}");
        out.push((name, messages(msgs), prompt));
    }
    assert!(out.len() >= 2, "{model}: expected chat cases");
    out
}

#[test]
fn smollm2_gguf_template_matches_llama_cpp_prompts() {
    let src = std::fs::read_to_string(fixture("chat/smollm2_chat_template.jinja")).unwrap();
    let t = ChatTemplate::new(&src).unwrap();
    for (name, msgs, prompt) in chat_cases("smollm2") {
        // SmolLM2's BOS and EOS are <|im_start|> / <|im_end|>; its template uses neither.
        let got = t.render(&msgs, true, "<|im_start|>", "<|im_end|>").unwrap();
        assert_eq!(got, prompt, "smollm2/{name}");
    }
    // for_model with the template picks it over any built-in.
    let t = ChatTemplate::for_model(Some(&src), "llama", |_| true).unwrap();
    assert_eq!(t.builtin_name(), None);
}

/// The same, with the template read from the model file itself when it is present.
#[test]
fn smollm2_template_from_the_gguf() {
    let path = std::env::var("CHORD_MODELS_DIR").unwrap_or_else(|_| "/work/models".into());
    let path = PathBuf::from(path).join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let Ok(file) = std::fs::File::open(&path) else {
        eprintln!("skipped: {} not present", path.display());
        return;
    };
    let g = chord_engine::gguf::Gguf::read(&file).unwrap();
    let src = g
        .metadata
        .get_str("tokenizer.chat_template")
        .unwrap()
        .unwrap();
    let fixture_src = std::fs::read_to_string(fixture("chat/smollm2_chat_template.jinja")).unwrap();
    assert_eq!(src, fixture_src);
    let t = ChatTemplate::from_gguf(&g).unwrap();
    assert_eq!(t.source(), src);
    for (name, msgs, prompt) in chat_cases("smollm2") {
        assert_eq!(t.render(&msgs, true, "", "").unwrap(), prompt, "{name}");
    }
}

#[test]
fn gemma3_builtin_matches_llama_cpp_prompts() {
    // Gemma 3's GGUF has no template: the architecture picks the built-in.
    let t = ChatTemplate::for_model(None, "gemma3", |_| false).unwrap();
    assert_eq!(t.builtin_name(), Some("gemma"));
    for (name, msgs, prompt) in chat_cases("gemma3") {
        let got = t.render(&msgs, true, "<bos>", "<eos>").unwrap();
        assert_eq!(got, prompt, "gemma3/{name}");
    }
}

#[test]
fn gemma3_gguf_has_no_template_and_gets_the_builtin() {
    let path = std::env::var("CHORD_MODELS_DIR").unwrap_or_else(|_| "/work/models".into());
    let path = PathBuf::from(path).join("gemma-3-270m-q4_k_m.gguf");
    let Ok(file) = std::fs::File::open(&path) else {
        eprintln!("skipped: {} not present", path.display());
        return;
    };
    let g = chord_engine::gguf::Gguf::read(&file).unwrap();
    assert_eq!(g.metadata.get_str("tokenizer.chat_template").unwrap(), None);
    let t = ChatTemplate::from_gguf(&g).unwrap();
    assert_eq!(t.builtin_name(), Some("gemma"));
    for (name, msgs, prompt) in chat_cases("gemma3") {
        assert_eq!(t.render(&msgs, true, "", "").unwrap(), prompt, "{name}");
    }
}

#[test]
fn hf_dialect_matches_python_jinja2() {
    let j = read_json("chat/jinja2_cases.json");
    let now = j["now_unix"].as_i64().unwrap();
    let mut failures = Vec::new();
    let cases = j["cases"].as_array().unwrap();
    assert!(cases.len() >= 40);
    for c in cases {
        let tname = c["template"].as_str().unwrap();
        let cname = c["conversation"].as_str().unwrap();
        let t = ChatTemplate::new(j["templates"][tname].as_str().unwrap()).unwrap();
        let msgs = messages(&j["conversations"][cname]);
        let got = t.render_with(
            &msgs,
            &RenderOptions {
                add_generation_prompt: c["add_generation_prompt"].as_bool().unwrap(),
                bos_token: c["bos_token"].as_str().unwrap(),
                eos_token: c["eos_token"].as_str().unwrap(),
                now_unix: Some(now),
            },
        );
        let label = format!("{tname}/{cname}/agp={}", c["add_generation_prompt"]);
        match (c.get("expected"), got) {
            (Some(want), Ok(got)) => {
                if want.as_str().unwrap() != got {
                    failures.push(format!(
                        "{label}\n--- want\n{}\n--- got\n{got}",
                        want.as_str().unwrap()
                    ));
                }
            }
            (None, Err(Error::InvalidArgument(msg))) => {
                let want = c["error"].as_str().unwrap();
                if !msg.contains(want) {
                    failures.push(format!("{label}: error {msg:?} lacks {want:?}"));
                }
            }
            (Some(_), Err(e)) => failures.push(format!("{label}: unexpected error {e}")),
            (None, Ok(got)) => failures.push(format!("{label}: expected an error, got {got:?}")),
            (None, Err(e)) => failures.push(format!("{label}: wrong error kind {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The built-in templates against llama.cpp's own `llm_chat_apply_template` for the same formats
/// (tests/fixtures/chat/llama_cpp_builtin.json, from scripts/llama_cpp_ref/harness.cpp).
#[test]
fn builtins_match_llama_cpp_formats() {
    // The conversations of harness.cpp.
    let conv = |name: &str| -> Vec<Message> {
        match name {
            "single" => vec![Message::new("user", "What is the boiling point of water?")],
            "multi" => vec![
                Message::new("system", "  You are terse.  "),
                Message::new("user", "Hi there."),
                Message::new("assistant", " Hello! How can I help? "),
                Message::new("user", "Write a haiku about the sea."),
            ],
            "unicode" => vec![
                Message::new(
                    "user",
                    "Ça va? \"quotes\" and \\backslash\\\nnew line — 日本語 🦀",
                ),
                Message::new("assistant", "Très bien.\ttab"),
            ],
            other => panic!("unknown conversation {other}"),
        }
    };
    let j = read_json("chat/llama_cpp_builtin.json");
    let cases = j.as_array().unwrap();
    assert_eq!(cases.len(), 36);
    for c in cases {
        let ours = match c["template"].as_str().unwrap() {
            "llama2-sys" => "llama2",
            "mistral-v3" => "mistral",
            other => other,
        };
        let t = ChatTemplate::builtin(ours).unwrap();
        let cname = c["conversation"].as_str().unwrap();
        let agp = c["add_generation_prompt"].as_bool().unwrap();
        let got = t.render(&conv(cname), agp, "<s>", "</s>").unwrap();
        assert_eq!(
            got,
            c["expected"].as_str().unwrap(),
            "{ours}/{cname}/agp={agp}"
        );
    }
}
