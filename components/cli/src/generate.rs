//! Loading, tokenizing and generating through the `chord:llm/inference` import.

use std::io::Write;

use crate::args::Args;

wit_bindgen::generate!({
    inline: "
        package chord:cli;
        world cli {
            import chord:llm/inference@0.1.0;
        }
    ",
    path: "../../wit",
    world: "chord:cli/cli",
    generate_all,
});

use chord::llm::inference::{self as llm, Error};

/// Runs one generation, streaming token text to stdout.
pub fn run(a: &Args) -> Result<(), String> {
    let model = llm::Model::load(
        &a.model,
        llm::LoadOptions {
            context_length: Some(a.ctx),
            cache_budget_bytes: None,
            context_shift: false,
            prefetch_layers: 1,
        },
    )
    .map_err(|e| {
        // Store errors name the file already; other load errors (an invalid model) do not.
        let e = describe(e);
        if e.contains(&a.model) {
            e
        } else {
            format!("{}: {e}", a.model)
        }
    })?;
    // The session first, as `chord run` does: it loads the weights, so an unsupported
    // architecture is reported as such rather than as whatever the tokenizer trips on.
    let session = model
        .new_session(llm::SessionOptions {
            context_length: None,
            keep_tokens: 0,
            batch_size: None,
            flash_attention: false,
        })
        .map_err(describe)?;
    // Special tokens added per metadata, special-token text parsed: a pre-rendered chat template
    // works as a prompt.
    let prompt = model.tokenize(&a.prompt, true, true).map_err(describe)?;
    let generation = session
        .generate(
            &prompt,
            &llm::SamplerOptions {
                temperature: a.temperature,
                // llama.cpp's (and `chord run`'s) defaults for the rest of the chain.
                top_k: 40,
                top_p: 0.95,
                min_p: 0.05,
                repeat_penalty: 1.0,
                repeat_last_n: 64,
                frequency_penalty: 0.0,
                presence_penalty: 0.0,
                logit_bias: Vec::new(),
                seed: a.seed,
                max_tokens: Some(a.n_predict),
                stop: Vec::new(),
                ignore_eos: false,
            },
        )
        .map_err(describe)?;
    let mut out = std::io::stdout().lock();
    while let Some(token) = generation.next().map_err(describe)? {
        out.write_all(token.text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("writing to stdout: {e}"))?;
    }
    writeln!(out).map_err(|e| format!("writing to stdout: {e}"))?;
    Ok(())
}

/// One line for an engine error.
fn describe(e: Error) -> String {
    match e {
        Error::InvalidModel(m) => format!("invalid model: {m}"),
        Error::Unsupported(m) => format!("unsupported: {m}"),
        Error::InvalidArgument(m) => format!("invalid argument: {m}"),
        Error::ContextFull(m) => format!("context full: {m}"),
        Error::Store(m) => format!("store: {m}"),
        Error::Compute(m) => format!("compute: {m}"),
        Error::OutOfMemory(m) => format!("out of memory: {m}"),
        Error::Cancelled(m) => format!("cancelled: {m}"),
    }
}
