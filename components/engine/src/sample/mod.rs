//! Token sampling over one row of logits, after llama.cpp's sampler chain.
//!
//! The chain and its order are those of llama.cpp's `common_sampler_init` (common/sampling.cpp) with
//! the default sampler list: logit bias → penalties → top-k → typical → top-p → min-p → temperature →
//! dist. Each stage is a port of the matching `llama_sampler_*_apply` in src/llama-sampler.cpp.
//! DRY, XTC, top-n-sigma, dynamic temperature and mirostat are not implemented (all are off in
//! llama.cpp's defaults).
//!
//! Determinism: the random stream is `std::mt19937` drawn through libstdc++'s
//! `uniform_real_distribution<double>`, as llama.cpp's `dist` sampler does; `exp`/`ln` come from the
//! pure-Rust `libm`, and candidates are ordered by (logit descending, id ascending), a total order. So
//! the same seed, options and logits give the same tokens natively and on wasm32.
//!
//! Allocation: [`Sampler::new`] reserves every buffer; [`Sampler::sample`] and [`Sampler::accept`]
//! allocate nothing once the penalty window is full.

use std::collections::{HashMap, VecDeque};

use crate::{Error, Result};

/// `LLAMA_DEFAULT_SEED`: a seed of this value means "draw a random seed".
pub const DEFAULT_SEED: u32 = u32::MAX;

/// Sampling options. [`Default`] gives llama.cpp's defaults (`common_params_sampling`).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerOptions {
    /// Softmax temperature; `<= 0` samples greedily (argmax after bias and penalties). Default 0.8.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; `<= 0` disables. Default 40.
    pub top_k: i32,
    /// Nucleus sampling: keep the smallest prefix whose probability reaches `top_p`; 1 disables.
    /// Default 0.95.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the top token's; 0 disables. Default 0.05.
    pub min_p: f32,
    /// Locally typical sampling; 1 disables. Default 1.
    pub typical_p: f32,
    /// top-p, min-p and typical keep at least this many tokens. Default 0.
    pub min_keep: usize,
    /// Repetition penalty over the last `repeat_last_n` accepted tokens; 1 disables. Default 1.
    pub repeat_penalty: f32,
    /// How many of the most recently accepted tokens the penalties look at; 0 disables. Default 64.
    pub repeat_last_n: usize,
    /// Subtracted `count` times per occurrence in the window. Default 0.
    pub frequency_penalty: f32,
    /// Subtracted once from every token present in the window. Default 0.
    pub presence_penalty: f32,
    /// Added to the logits of the given tokens before everything else; `-inf` bans a token.
    pub logit_bias: Vec<(u32, f32)>,
    /// RNG seed; [`DEFAULT_SEED`] draws a random one. Default [`DEFAULT_SEED`].
    pub seed: u32,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            typical_p: 1.0,
            min_keep: 0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: DEFAULT_SEED,
        }
    }
}

impl SamplerOptions {
    /// Greedy decoding: temperature 0, everything else at its default (penalties off).
    pub fn greedy() -> Self {
        SamplerOptions {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Whether [`Sampler::sample`] takes the argmax instead of drawing.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    fn penalties_enabled(&self) -> bool {
        // llama.cpp's `llama_sampler_penalties::is_disabled`.
        self.repeat_last_n != 0
            && !(self.repeat_penalty == 1.0
                && self.frequency_penalty == 0.0
                && self.presence_penalty == 0.0)
    }

    /// Checks every field; any NaN or out-of-range value is `Error::InvalidArgument`.
    pub fn validate(&self) -> Result<()> {
        fn bad(msg: String) -> Result<()> {
            Err(Error::InvalidArgument(msg))
        }
        fn unit(name: &str, v: f32) -> Result<()> {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("{name} must be in [0, 1], got {v}"));
            }
            Ok(())
        }
        if !self.temperature.is_finite() {
            return bad(format!(
                "temperature must be finite, got {}",
                self.temperature
            ));
        }
        unit("top_p", self.top_p)?;
        unit("min_p", self.min_p)?;
        unit("typical_p", self.typical_p)?;
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!(
                "repeat_penalty must be finite and > 0, got {}",
                self.repeat_penalty
            ));
        }
        if !self.frequency_penalty.is_finite() {
            return bad(format!(
                "frequency_penalty must be finite, got {}",
                self.frequency_penalty
            ));
        }
        if !self.presence_penalty.is_finite() {
            return bad(format!(
                "presence_penalty must be finite, got {}",
                self.presence_penalty
            ));
        }
        for &(id, b) in &self.logit_bias {
            // -inf bans a token; NaN or +inf would poison the softmax.
            if b.is_nan() || b == f32::INFINITY {
                return bad(format!(
                    "logit bias for token {id} must not be NaN or +inf, got {b}"
                ));
            }
        }
        Ok(())
    }
}

/// One candidate token: llama.cpp's `llama_token_data`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenData {
    /// Token id.
    pub id: u32,
    /// Logit after the stages applied so far.
    pub logit: f32,
    /// Probability, once a stage has computed it.
    pub p: f32,
}

/// Descending by logit, ties by ascending id: a total order, so every partial or full sort agrees
/// and results do not depend on the sort algorithm (llama.cpp's `std::partial_sort` is unstable).
fn by_logit_desc(a: &TokenData, b: &TokenData) -> std::cmp::Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// The candidate array between stages: llama.cpp's `llama_token_data_array`.
#[derive(Debug, Default)]
struct Candidates {
    data: Vec<TokenData>,
    /// Whether `data` is fully sorted by [`by_logit_desc`].
    sorted: bool,
}

impl Candidates {
    /// Sorts so that the first `k` entries are the top `k`, in order. `k == len` sorts everything.
    fn sort_prefix(&mut self, k: usize) {
        if self.sorted || k == 0 {
            return;
        }
        let n = self.data.len();
        if k < n {
            self.data.select_nth_unstable_by(k - 1, by_logit_desc);
            self.data[..k].sort_unstable_by(by_logit_desc);
        } else {
            self.data.sort_unstable_by(by_logit_desc);
            self.sorted = true;
        }
    }

    fn max_logit(&self) -> f32 {
        if self.sorted {
            return self.data.first().map_or(f32::NEG_INFINITY, |t| t.logit);
        }
        self.data.iter().fold(
            f32::NEG_INFINITY,
            |m, t| if t.logit > m { t.logit } else { m },
        )
    }

    /// `llama_sampler_softmax_impl` without sorting: fills `p` over the current candidates.
    fn softmax(&mut self) {
        let max_l = self.max_logit();
        let mut sum = 0.0f32;
        for t in &mut self.data {
            t.p = libm::expf(t.logit - max_l);
            sum += t.p;
        }
        for t in &mut self.data {
            t.p /= sum;
        }
    }

    /// `llama_sampler_top_k_impl`.
    fn top_k(&mut self, k: i32) {
        if k <= 0 {
            return;
        }
        let k = usize::try_from(k)
            .unwrap_or(usize::MAX)
            .min(self.data.len());
        self.sort_prefix(k);
        self.data.truncate(k);
        self.sorted = true;
    }

    /// `llama_sampler_top_p_apply`. The adaptive partial sort of llama.cpp is kept (top 256 first),
    /// and with a total order it gives exactly the full-sort result.
    fn top_p(&mut self, p: f32, min_keep: usize) {
        if p >= 1.0 || self.data.is_empty() {
            return;
        }
        self.softmax();
        let n = self.data.len();
        let mut k = if !self.sorted && n > 1024 { 256 } else { n };
        self.sort_prefix(k);
        let mut cum = 0.0f32;
        let mut last = n;
        for i in 0..n {
            if i == k {
                // Past the heuristic prefix: sort the rest too.
                k = n;
                self.sort_prefix(n);
            }
            cum += self.data[i].p;
            if cum >= p && i + 1 >= min_keep {
                last = i + 1;
                break;
            }
        }
        if last == n {
            self.sort_prefix(n);
        }
        self.data.truncate(last);
        self.sorted = true;
    }

    /// `llama_sampler_min_p_apply`.
    fn min_p(&mut self, p: f32, min_keep: usize) {
        if p <= 0.0 || self.data.is_empty() {
            return;
        }
        if !self.sorted {
            // Unsorted path: keep order, filter by logit.
            let min_logit = self.max_logit() + libm::logf(p);
            let kept = self.data.iter().filter(|t| t.logit >= min_logit).count();
            if kept > 0 && kept >= min_keep {
                self.data.retain(|t| t.logit >= min_logit);
                return;
            }
        }
        self.sort_prefix(self.data.len());
        let min_logit = self.data[0].logit + libm::logf(p);
        let mut i = 1;
        while i < self.data.len() {
            if self.data[i].logit < min_logit && i >= min_keep {
                break;
            }
            i += 1;
        }
        self.data.truncate(i);
    }

    /// `llama_sampler_typical_apply`. `scores` and `tmp` are scratch buffers reused across calls.
    fn typical(
        &mut self,
        p: f32,
        min_keep: usize,
        scores: &mut Vec<(f32, u32)>,
        tmp: &mut Vec<TokenData>,
    ) {
        if p >= 1.0 || self.data.is_empty() {
            return;
        }
        self.sort_prefix(self.data.len());
        self.softmax();
        let mut entropy = 0.0f32;
        for t in &self.data {
            // Skip p == 0 (underflowed exp): 0 * ln 0 would make the entropy NaN, where llama.cpp
            // then sorts NaN scores; the limit p ln p → 0 is what the formula means.
            if t.p > 0.0 {
                entropy += -t.p * libm::logf(t.p);
            }
        }
        scores.clear();
        for (i, t) in self.data.iter().enumerate() {
            // Index fits u32: the candidate count is at most n_vocab, checked in `Sampler::new`.
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            scores.push(((-libm::logf(t.p) - entropy).abs(), i));
        }
        scores.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut cum = 0.0f32;
        let mut last = scores.len();
        for (i, &(_, idx)) in scores.iter().enumerate() {
            cum += self.data[idx as usize].p;
            if cum > p && (min_keep == 0 || i + 1 >= min_keep) {
                last = i + 1;
                break;
            }
        }
        tmp.clear();
        tmp.extend(
            scores[..last]
                .iter()
                .map(|&(_, idx)| self.data[idx as usize]),
        );
        self.data.clear();
        self.data.extend_from_slice(tmp);
        self.sorted = false;
    }

    /// `llama_sampler_temp_impl` for `temp > 0`.
    fn temperature(&mut self, temp: f32) {
        for t in &mut self.data {
            t.logit /= temp;
        }
    }

    /// `llama_sampler_dist_apply`: softmax, then one uniform draw over the cumulative sum.
    /// Returns the index of the chosen candidate.
    fn dist(&mut self, rng: &mut Mt19937) -> usize {
        let n = self.data.len();
        if n == 1 {
            // llama.cpp draws even here, to keep the stream aligned with its backend sampler.
            rng.uniform_f64();
            self.data[0].p = 1.0;
            return 0;
        }
        let max_l = self.max_logit();
        let mut sum = 0.0f64;
        for t in &mut self.data {
            t.p = libm::expf(t.logit - max_l);
            sum += f64::from(t.p);
        }
        let target = sum * rng.uniform_f64();
        let mut run = 0.0f64;
        let mut selected = None;
        for (i, t) in self.data.iter_mut().enumerate() {
            if selected.is_none() {
                run += f64::from(t.p);
                // `t.p > 0` guards the measure-zero draw of exactly 0, which would pick a banned token.
                if run >= target && t.p > 0.0 {
                    selected = Some(i);
                }
            }
            t.p = (f64::from(t.p) / sum) as f32;
        }
        selected.unwrap_or(n - 1)
    }
}

/// A seeded sampler: options, penalty history, RNG and reusable candidate buffers.
#[derive(Debug)]
pub struct Sampler {
    opts: SamplerOptions,
    n_vocab: usize,
    seed: u32,
    rng: Mt19937,
    cur: Candidates,
    /// The last `repeat_last_n` accepted tokens (llama.cpp's `prev` ring buffer).
    history: VecDeque<u32>,
    /// Occurrences of each token in `history` (llama.cpp's `token_count`).
    counts: HashMap<u32, u32>,
    scores: Vec<(f32, u32)>,
    tmp: Vec<TokenData>,
    /// The tokens the bias and penalties change, with their changed logits.
    modified: Vec<(u32, f32)>,
}

fn oom(what: &str, e: std::collections::TryReserveError) -> Error {
    Error::OutOfMemory(format!("sampler {what}: {e}"))
}

impl Sampler {
    /// Creates a sampler for rows of `n_vocab` logits. Validates `opts` and checks logit-bias ids.
    pub fn new(opts: SamplerOptions, n_vocab: usize) -> Result<Self> {
        opts.validate()?;
        if n_vocab == 0 || u32::try_from(n_vocab).is_err() {
            return Err(Error::InvalidArgument(format!(
                "n_vocab must be in 1..=2^32-1, got {n_vocab}"
            )));
        }
        for &(id, _) in &opts.logit_bias {
            if usize::try_from(id).map_or(true, |i| i >= n_vocab) {
                return Err(Error::InvalidArgument(format!(
                    "logit bias token {id} is out of range (n_vocab {n_vocab})"
                )));
            }
        }
        let seed = if opts.seed == DEFAULT_SEED {
            random_seed()
        } else {
            opts.seed
        };
        let mut cur = Candidates::default();
        cur.data
            .try_reserve_exact(n_vocab)
            .map_err(|e| oom("candidates", e))?;
        let mut scores = Vec::new();
        let mut tmp = Vec::new();
        if opts.typical_p < 1.0 {
            scores
                .try_reserve_exact(n_vocab)
                .map_err(|e| oom("scratch", e))?;
            tmp.try_reserve_exact(n_vocab)
                .map_err(|e| oom("scratch", e))?;
        }
        let mut history = VecDeque::new();
        let mut counts = HashMap::new();
        if opts.penalties_enabled() {
            // The window fills up to `repeat_last_n`; reserve it up front (capped, so an absurd
            // value cannot demand memory before any token exists; beyond it the buffers grow).
            let n = opts.repeat_last_n.min(1 << 16);
            history.try_reserve(n).map_err(|e| oom("history", e))?;
            counts.try_reserve(n).map_err(|e| oom("history", e))?;
        }
        Ok(Sampler {
            opts,
            n_vocab,
            seed,
            rng: Mt19937::new(seed),
            cur,
            history,
            counts,
            scores,
            tmp,
            modified: Vec::new(),
        })
    }

    /// The options in use.
    pub fn options(&self) -> &SamplerOptions {
        &self.opts
    }

    /// The seed in use (a random one if the options asked for [`DEFAULT_SEED`]).
    pub fn seed(&self) -> u32 {
        self.seed
    }

    /// Forgets accepted tokens and restarts the RNG from [`Sampler::seed`].
    pub fn reset(&mut self) {
        self.history.clear();
        self.counts.clear();
        self.rng = Mt19937::new(self.seed);
    }

    /// Records a token as part of the context, for the penalties (`llama_sampler_penalties_accept`).
    /// Call it for every sampled token (and, if wanted, for prompt tokens).
    pub fn accept(&mut self, token: u32) -> Result<()> {
        if usize::try_from(token).map_or(true, |t| t >= self.n_vocab) {
            return Err(Error::InvalidArgument(format!(
                "token {token} is out of range (n_vocab {})",
                self.n_vocab
            )));
        }
        if !self.opts.penalties_enabled() {
            return Ok(());
        }
        *self.counts.entry(token).or_insert(0) += 1;
        if self.history.len() >= self.opts.repeat_last_n
            && let Some(old) = self.history.pop_front()
            && let Some(c) = self.counts.get_mut(&old)
        {
            *c -= 1;
            if *c == 0 {
                self.counts.remove(&old);
            }
        }
        self.history.push_back(token);
        Ok(())
    }

    /// Picks the next token from one row of `n_vocab` logits. Does not call [`Sampler::accept`].
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.len() != self.n_vocab {
            return Err(Error::InvalidArgument(format!(
                "logits row has {} entries, expected n_vocab {}",
                logits.len(),
                self.n_vocab
            )));
        }
        let greedy = self.opts.is_greedy();
        let top_k = usize::try_from(self.opts.top_k).unwrap_or(0);
        if greedy || (top_k > 0 && top_k < self.n_vocab) {
            // The chain keeps at most the top k (or 1): gather only those, in one pass over the
            // row, instead of a candidate per token (262k of them for Gemma 3: more time than
            // the rest of the guest's work on a token).
            self.modified_tokens(logits);
            if greedy {
                let t = self.argmax_row(logits)?;
                let cur = &mut self.cur;
                cur.data.clear();
                cur.data.push(t);
                cur.sorted = true;
                return Ok(t.id);
            }
            self.top_k_row(logits, top_k)?;
        } else {
            self.all_candidates(logits)?;
            self.cur.top_k(self.opts.top_k);
        }

        let o = &self.opts;
        cur_chain(&mut self.cur, o, &mut self.scores, &mut self.tmp);
        let i = self.cur.dist(&mut self.rng);
        Ok(self.cur.data[i].id)
    }

    /// Every token as a candidate, with the logit bias and penalties applied (the chain's
    /// start when top-k is off).
    fn all_candidates(&mut self, logits: &[f32]) -> Result<()> {
        if let Some(i) = logits
            .iter()
            .position(|l| l.is_nan() || *l == f32::INFINITY)
        {
            return Err(Error::InvalidArgument(format!(
                "logit of token {i} is {} (NaN or +inf)",
                logits[i]
            )));
        }
        let cur = &mut self.cur;
        cur.data.clear();
        cur.sorted = false;
        // Ids fit u32: checked in `new`. Capacity is n_vocab, so this does not allocate.
        cur.data
            .extend(logits.iter().enumerate().map(|(i, &logit)| TokenData {
                id: i as u32,
                logit,
                p: 0.0,
            }));

        // Logit bias and penalties index candidates by id: the array is still in vocab order.
        for &(id, bias) in &self.opts.logit_bias {
            cur.data[id as usize].logit += bias;
        }
        if self.opts.penalties_enabled() {
            let o = &self.opts;
            for (&id, &count) in &self.counts {
                let t = &mut cur.data[id as usize];
                // `llama_sampler_penalties_apply`: dividing a negative logit would raise it, so
                // negative logits are multiplied instead.
                if t.logit <= 0.0 {
                    t.logit *= o.repeat_penalty;
                } else {
                    t.logit /= o.repeat_penalty;
                }
                t.logit -= count as f32 * o.frequency_penalty
                    + if count > 0 { o.presence_penalty } else { 0.0 };
            }
        }

        if cur.max_logit() == f32::NEG_INFINITY {
            return Err(Error::InvalidArgument(
                "every token has logit -inf (all banned by logit bias?)".into(),
            ));
        }

        Ok(())
    }

    /// [`Sampler::sample`] with a candidate per token all the way (the path before the one-pass
    /// forms of greedy and top-k), for the tests that hold the two equal.
    #[cfg(test)]
    pub(crate) fn sample_reference(&mut self, logits: &[f32]) -> Result<u32> {
        self.all_candidates(logits)?;
        let cur = &mut self.cur;
        if self.opts.is_greedy() {
            let mut best = 0;
            for (i, t) in cur.data.iter().enumerate() {
                if t.logit > cur.data[best].logit {
                    best = i;
                }
            }
            let mut t = cur.data[best];
            t.p = 1.0;
            cur.data.clear();
            cur.data.push(t);
            cur.sorted = true;
            return Ok(t.id);
        }
        cur.top_k(self.opts.top_k);
        cur_chain(cur, &self.opts, &mut self.scores, &mut self.tmp);
        let i = cur.dist(&mut self.rng);
        Ok(cur.data[i].id)
    }

    /// The tokens whose logits the bias and penalties change, with their changed logits, into
    /// `self.modified` (each once; `logits` is checked for NaN and +inf by the caller's pass).
    fn modified_tokens(&mut self, logits: &[f32]) {
        let o = &self.opts;
        let m = &mut self.modified;
        m.clear();
        let mut add = |id: u32| {
            if !m.iter().any(|&(t, _)| t == id) {
                m.push((id, 0.0));
            }
        };
        for &(id, _) in &o.logit_bias {
            add(id);
        }
        let penalties = o.penalties_enabled();
        if penalties {
            for &id in self.counts.keys() {
                add(id);
            }
        }
        for (id, v) in m.iter_mut() {
            // In the order of `all_candidates`: every bias entry, then the penalties.
            let mut l = logits[*id as usize];
            for &(_, b) in o.logit_bias.iter().filter(|(t, _)| t == id) {
                l += b;
            }
            if penalties && let Some(&count) = self.counts.get(id) {
                l = if l <= 0.0 {
                    l * o.repeat_penalty
                } else {
                    l / o.repeat_penalty
                };
                l -= count as f32 * o.frequency_penalty
                    + if count > 0 { o.presence_penalty } else { 0.0 };
            }
            *v = l;
        }
    }

    /// The greedy pick over the row as the bias and penalties change it (`self.modified`): the
    /// first largest logit (llama.cpp's `>` scan), with `all_candidates`'s errors.
    fn argmax_row(&self, logits: &[f32]) -> Result<TokenData> {
        let modified = |i: usize| self.modified.iter().any(|&(t, _)| t as usize == i);
        let mut best: Option<(usize, f32)> = None;
        for (i, &l) in logits.iter().enumerate() {
            check_logit(i, l)?;
            if best.is_none_or(|(_, b)| l > b) {
                best = Some((i, l));
            }
        }
        // The row's own best is changed: the best of the unchanged ones, then.
        if best.is_some_and(|(i, _)| modified(i)) {
            best = None;
            for (i, &l) in logits.iter().enumerate() {
                if !modified(i) && best.is_none_or(|(_, b)| l > b) {
                    best = Some((i, l));
                }
            }
        }
        for &(id, l) in &self.modified {
            let i = id as usize;
            if best.is_none_or(|(bi, b)| l > b || (l == b && i < bi)) {
                best = Some((i, l));
            }
        }
        match best {
            Some((i, l)) if l != f32::NEG_INFINITY => Ok(TokenData {
                id: i as u32,
                logit: l,
                p: 1.0,
            }),
            _ => Err(all_banned()),
        }
    }

    /// The top `k` candidates of the row as the bias and penalties change it, in order: the
    /// first stage of the chain (`llama_sampler_top_k`), without a candidate per token.
    fn top_k_row(&mut self, logits: &[f32], k: usize) -> Result<()> {
        let modified = &self.modified;
        let cur = &mut self.cur;
        cur.data.clear();
        cur.sorted = false;
        // The top k of the unchanged tokens are among the top k + |modified| of the row.
        let keep = (k + modified.len()).min(logits.len());
        let mut floor: Option<f32> = None;
        for (i, &l) in logits.iter().enumerate() {
            check_logit(i, l)?;
            // A later token with the floor's logit ranks after it (ids break ties).
            if floor.is_some_and(|f| l.total_cmp(&f) != std::cmp::Ordering::Greater) {
                continue;
            }
            cur.data.push(TokenData {
                id: i as u32,
                logit: l,
                p: 0.0,
            });
            if cur.data.len() == 2 * keep {
                cur.data.select_nth_unstable_by(keep - 1, by_logit_desc);
                cur.data.truncate(keep);
                floor = Some(cur.data[keep - 1].logit);
            }
        }
        cur.data
            .retain(|t| !modified.iter().any(|&(id, _)| id == t.id));
        cur.data.extend(
            modified
                .iter()
                .map(|&(id, logit)| TokenData { id, logit, p: 0.0 }),
        );
        cur.data.sort_unstable_by(by_logit_desc);
        cur.data.truncate(k);
        cur.sorted = true;
        if cur.max_logit() == f32::NEG_INFINITY {
            return Err(all_banned());
        }
        Ok(())
    }

    /// The candidates left after the last [`Sampler::sample`], in chain order, with `p` the final
    /// normalized probabilities (for greedy: the chosen token alone, with `p` 1).
    pub fn candidates(&self) -> &[TokenData] {
        &self.cur.data
    }
}

/// The rest of the chain after top-k: typical, top-p, min-p, temperature.
fn cur_chain(
    cur: &mut Candidates,
    o: &SamplerOptions,
    scores: &mut Vec<(f32, u32)>,
    tmp: &mut Vec<TokenData>,
) {
    cur.typical(o.typical_p, o.min_keep, scores, tmp);
    cur.top_p(o.top_p, o.min_keep);
    cur.min_p(o.min_p, o.min_keep);
    cur.temperature(o.temperature);
}

/// A NaN or +inf logit (of token `i`) is an error.
fn check_logit(i: usize, l: f32) -> Result<()> {
    if l.is_nan() || l == f32::INFINITY {
        return Err(Error::InvalidArgument(format!(
            "logit of token {i} is {l} (NaN or +inf)"
        )));
    }
    Ok(())
}

fn all_banned() -> Error {
    Error::InvalidArgument("every token has logit -inf (all banned by logit bias?)".into())
}

/// Index of the largest logit (the first one on ties); `None` for an empty row.
/// NaN entries are never chosen.
pub fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if l.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| l > b) {
            best = Some((i, l));
        }
    }
    best.and_then(|(i, _)| u32::try_from(i).ok())
}

/// A seed from the OS (via std's randomly keyed hasher), for [`DEFAULT_SEED`].
fn random_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(0x5eed);
    let v = h.finish();
    let s = (v ^ (v >> 32)) as u32;
    // Never hand back the "random" marker itself.
    if s == DEFAULT_SEED { 0 } else { s }
}

/// The 32-bit Mersenne Twister, bit-identical to C++'s `std::mt19937` (what llama.cpp samples with).
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mt19937")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Mt19937 {
    const N: usize = 624;
    const M: usize = 397;

    /// `std::mt19937(seed)`.
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..Self::N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 {
            state,
            index: Self::N,
        }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..Self::N {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % Self::N] & LOWER);
            let mut v = self.state[(i + Self::M) % Self::N] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= MATRIX_A;
            }
            self.state[i] = v;
        }
        self.index = 0;
    }

    /// The next 32-bit output (`operator()`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= Self::N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// A double in [0, 1): libstdc++'s `generate_canonical<double, 53>` (two draws, low word
    /// first), which `uniform_real_distribution<double>(0, 1)` returns unchanged.
    pub fn uniform_f64(&mut self) -> f64 {
        const TWO32: f64 = 4_294_967_296.0;
        let lo = f64::from(self.next_u32());
        let hi = f64::from(self.next_u32());
        let r = (lo + hi * TWO32) / (TWO32 * TWO32);
        // libstdc++ clamps a rounded-up 1.0 to the largest double below 1.
        if r >= 1.0 {
            1.0 - f64::EPSILON / 2.0
        } else {
            r
        }
    }
}

#[cfg(test)]
mod tests;
