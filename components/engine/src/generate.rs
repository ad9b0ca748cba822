//! One streaming generation: prefill the prompt, then sample, check stop conditions and decode one
//! token per [`Generation::step`]. The CLI drives it natively today and the WIT `generation`
//! resource wraps the same type, so both stream identical tokens.

use std::time::Instant;

use crate::model::{LogitsMode, Session};
use crate::sample::{Sampler, SamplerOptions};
use crate::stop::{StopCriteria, StopReason};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Options of one generation.
#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    /// Sampler chain and seed.
    pub sampler: SamplerOptions,
    /// Stop after this many generated tokens (`None`: until EOS or the context is full).
    pub max_tokens: Option<usize>,
    /// Stop strings; the text stops before them.
    pub stops: Vec<String>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-generation token (EOS/EOT).
    Eos,
    /// `max_tokens` tokens were generated.
    Length,
    /// The context window is full (context shift off).
    ContextFull,
    /// A stop string.
    Stop,
}

impl Finish {
    /// `eos`, `length` (max tokens or a full context) or `stop`, as in the CLI's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Eos => "eos",
            Finish::Length | Finish::ContextFull => "length",
            Finish::Stop => "stop",
        }
    }
}

/// One step of a generation: a token and the text that may be shown now.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The generated token (an end-of-generation token included, with empty text).
    pub id: u32,
    /// Text safe to show now (held back while it could begin a stop string or a UTF-8 sequence).
    pub text: String,
    /// Set on the last step.
    pub finish: Option<Finish>,
}

/// Counts and timings of a generation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

/// The state of a generation, apart from the session and tokenizer it runs on: what a host that
/// cannot lend borrows across calls (the WIT `generation` resource) keeps. [`Generation`] bundles
/// it with its borrows for native callers.
pub struct GenerationState {
    sampler: Sampler,
    criteria: StopCriteria,
    /// The sampled token not yet returned.
    pending: Option<u32>,
    usage: Usage,
    finished: bool,
}

impl std::fmt::Debug for GenerationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerationState")
            .field("usage", &self.usage)
            .field("finished", &self.finished)
            .finish()
    }
}

impl GenerationState {
    /// Prefills `prompt` (after whatever the session already holds) and samples the first token.
    /// A prompt that does not fit is [`Error::ContextFull`]; an invalid option or token fails
    /// before the session changes.
    pub fn start(
        session: &mut Session,
        tokenizer: &Tokenizer,
        prompt: &[u32],
        opts: &GenerateOptions,
    ) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::InvalidArgument("empty prompt".into()));
        }
        let mut sampler = Sampler::new(opts.sampler.clone(), tokenizer.n_vocab())?;
        let criteria = StopCriteria::new(opts.max_tokens, opts.stops.iter().cloned())?;
        // Penalties look back over the prompt too, as in llama.cpp's common sampler.
        for &t in prompt {
            sampler.accept(t)?;
        }
        let t0 = Instant::now();
        let first = {
            let logits = session.eval(prompt, LogitsMode::Last)?;
            sampler.sample(logits.last())?
        };
        let usage = Usage {
            prompt_tokens: prompt.len(),
            prefill_ms: ms(t0),
            ..Usage::default()
        };
        let finished = criteria.reason().is_some();
        Ok(GenerationState {
            sampler,
            criteria,
            pending: Some(first),
            usage,
            finished,
        })
    }

    /// The next step, or `None` after the last one. `session` and `tokenizer` must be the ones
    /// the generation started on.
    pub fn step(&mut self, session: &mut Session, tok: &Tokenizer) -> Result<Option<Step>> {
        if self.finished {
            return Ok(None);
        }
        let Some(id) = self.pending.take() else {
            return Ok(None);
        };
        let piece = tok.token_to_piece(id, false)?;
        let (text, reason) = self.criteria.on_token(id, piece, |t| tok.is_eog(t));
        if let Some(reason) = reason {
            self.finished = true;
            if reason != StopReason::Eog {
                self.usage.completion_tokens += 1;
            }
            return Ok(Some(Step {
                id,
                text,
                finish: Some(finish_of(reason)),
            }));
        }
        self.usage.completion_tokens += 1;
        self.sampler.accept(id)?;
        let t0 = Instant::now();
        let next = match session.eval(&[id], LogitsMode::Last) {
            Ok(logits) => self.sampler.sample(logits.last())?,
            Err(Error::ContextFull(_)) => {
                // The window is full (context shift off): end here, keeping what was generated.
                self.usage.decode_ms += ms(t0);
                self.finished = true;
                let mut text = text;
                text.push_str(&self.criteria.finish());
                return Ok(Some(Step {
                    id,
                    text,
                    finish: Some(Finish::ContextFull),
                }));
            }
            Err(e) => return Err(e),
        };
        self.usage.decode_ms += ms(t0);
        self.pending = Some(next);
        Ok(Some(Step {
            id,
            text,
            finish: None,
        }))
    }

    /// Ends the generation early (a caller's cancel); returns the text still held back.
    pub fn cancel(&mut self) -> String {
        self.finished = true;
        self.pending = None;
        self.criteria.finish()
    }

    /// Whether the last step has been returned (or the generation was cancelled).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Counts and timings so far.
    pub fn usage(&self) -> Usage {
        self.usage
    }
}

/// A generation in progress over a session: [`GenerationState`] with its borrows.
#[derive(Debug)]
pub struct Generation<'a> {
    session: &'a mut Session,
    tokenizer: &'a Tokenizer,
    state: GenerationState,
}

impl<'a> Generation<'a> {
    /// Prefills `prompt` (after whatever the session already holds) and samples the first token.
    /// A prompt that does not fit is [`Error::ContextFull`].
    pub fn new(
        session: &'a mut Session,
        tokenizer: &'a Tokenizer,
        prompt: &[u32],
        opts: &GenerateOptions,
    ) -> Result<Self> {
        let state = GenerationState::start(session, tokenizer, prompt, opts)?;
        Ok(Generation {
            session,
            tokenizer,
            state,
        })
    }

    /// The next step, or `None` after the last one.
    pub fn step(&mut self) -> Result<Option<Step>> {
        self.state.step(self.session, self.tokenizer)
    }

    /// Ends the generation early (a caller's cancel); returns the text still held back.
    pub fn cancel(&mut self) -> String {
        self.state.cancel()
    }

    /// Counts and timings so far.
    pub fn usage(&self) -> Usage {
        self.state.usage()
    }
}

fn finish_of(r: StopReason) -> Finish {
    match r {
        StopReason::Eog => Finish::Eos,
        StopReason::MaxTokens => Finish::Length,
        StopReason::StopString(_) => Finish::Stop,
    }
}

fn ms(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1e3
}
