//! Token sampling: turns one step's logits into the next token, in the order of llama.cpp's
//! default sampler chain (logit bias, penalties, top-k, top-p, min-p, temperature, draw).
//!
//! Each stage is a method on [`Candidates`] so it can be tested on hand-made logits; [`Sampler`]
//! strings them together and owns the random number generator and the penalty history.

use std::collections::{HashMap, VecDeque};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Errors of sampling: bad parameters or logits that cannot be sampled from.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplingError {
    #[error("sampling parameter {name} = {value} is out of range ({expected})")]
    BadParameter { name: &'static str, value: f32, expected: &'static str },
    #[error("logit bias names token {id}, but the vocabulary has {n_vocab} tokens")]
    BiasTokenOutOfRange { id: u32, n_vocab: usize },
    #[error("logit bias for token {id} is {bias}; it must be finite or -inf")]
    BadBias { id: u32, bias: f32 },
    #[error("expected {expected} logits (one per vocabulary entry), got {got}")]
    LogitCount { expected: usize, got: usize },
    #[error("logit of token {id} is {value}; the model produced a NaN or +inf")]
    BadLogit { id: u32, value: f32 },
    #[error("every token is masked (all logits are -inf after bias and penalties)")]
    AllMasked,
}

/// What the sampler does; the defaults are llama.cpp's (`common_params_sampling`), with a fixed seed.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits before the draw; `<= 0` means greedy (argmax after bias and penalties).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability sums to at least `top_p`; 1 disables.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 disables.
    pub min_p: f32,
    /// Divides positive and multiplies negative logits of recently seen tokens; 1 disables.
    pub repeat_penalty: f32,
    /// How many of the most recent tokens the penalties look at; 0 disables all penalties.
    pub repeat_last_n: usize,
    /// Subtracted once from the logit of every token seen in the window.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it was seen in the window.
    pub frequency_penalty: f32,
    /// Added to the logit of a token before anything else; `-inf` bans it.
    pub logit_bias: Vec<(u32, f32)>,
    /// Seeds the ChaCha20 generator: the same seed, logits and history give the same tokens.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Parameters that always pick the most likely token.
    pub fn greedy() -> Self {
        Self { temperature: 0.0, ..Self::default() }
    }

    /// Whether the sampler picks the argmax rather than drawing.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    fn penalties_enabled(&self) -> bool {
        self.repeat_last_n > 0
            && (self.repeat_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0)
    }

    /// Checks every parameter against its range and every biased token against the vocabulary.
    pub fn validate(&self, n_vocab: usize) -> Result<(), SamplingError> {
        let check = |name, value: f32, ok: bool, expected| {
            if ok {
                Ok(())
            } else {
                Err(SamplingError::BadParameter { name, value, expected })
            }
        };
        let t = self.temperature;
        check("temperature", t, t.is_finite(), "a finite number; <= 0 is greedy")?;
        let p = self.top_p;
        check("top_p", p, (0.0..=1.0).contains(&p), "0 to 1")?;
        let p = self.min_p;
        check("min_p", p, (0.0..=1.0).contains(&p), "0 to 1")?;
        let r = self.repeat_penalty;
        check("repeat_penalty", r, r.is_finite() && r > 0.0, "a finite number > 0")?;
        let f = self.presence_penalty;
        check("presence_penalty", f, f.is_finite(), "a finite number")?;
        let f = self.frequency_penalty;
        check("frequency_penalty", f, f.is_finite(), "a finite number")?;
        for &(id, bias) in &self.logit_bias {
            if id as usize >= n_vocab {
                return Err(SamplingError::BiasTokenOutOfRange { id, n_vocab });
            }
            if bias.is_nan() || bias == f32::INFINITY {
                return Err(SamplingError::BadBias { id, bias });
            }
        }
        Ok(())
    }
}

/// One token under consideration: its id, its (modified) logit and, after a softmax, its probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
    pub p: f32,
}

/// Orders candidates by descending logit, ties broken by the lower id so every order is total.
fn by_logit_desc(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// The working set of one sampling step. Stages shrink or reorder it; `sorted` records whether
/// it is in descending logit order, which lets later stages skip work (as llama.cpp does).
#[derive(Clone, Debug, Default)]
pub struct Candidates {
    pub items: Vec<Candidate>,
    pub sorted: bool,
}

impl Candidates {
    /// One candidate per logit, in id order.
    pub fn from_logits(logits: &[f32]) -> Self {
        let mut c = Self::default();
        c.fill(logits);
        c
    }

    /// Refills from a step's logits, reusing the allocation.
    pub fn fill(&mut self, logits: &[f32]) {
        self.items.clear();
        self.items
            .extend(logits.iter().enumerate().map(|(i, &logit)| Candidate { id: i as u32, logit, p: 0.0 }));
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Ids in the current order.
    pub fn ids(&self) -> Vec<u32> {
        self.items.iter().map(|c| c.id).collect()
    }

    fn find_mut(&mut self, id: u32) -> Option<&mut Candidate> {
        // Straight after `fill` the candidate of token `id` sits at index `id`.
        match self.items.get(id as usize) {
            Some(c) if c.id == id => self.items.get_mut(id as usize),
            _ => self.items.iter_mut().find(|c| c.id == id),
        }
    }

    /// Adds each bias to its token's logit.
    pub fn apply_logit_bias(&mut self, bias: &[(u32, f32)]) {
        for &(id, b) in bias {
            if let Some(c) = self.find_mut(id) {
                c.logit += b;
            }
        }
    }

    /// llama.cpp's repetition penalties over the tokens in `history`: the repeat penalty divides a
    /// positive logit and multiplies a non-positive one (so it always lowers it), then
    /// `count * frequency + presence` is subtracted.
    pub fn apply_penalties(&mut self, history: &TokenHistory, repeat: f32, frequency: f32, presence: f32) {
        if history.counts.is_empty() {
            return;
        }
        for c in &mut self.items {
            let Some(&count) = history.counts.get(&c.id) else { continue };
            if c.logit <= 0.0 {
                c.logit *= repeat;
            } else {
                c.logit /= repeat;
            }
            c.logit -= count as f32 * frequency + presence;
        }
        self.sorted = false;
    }

    /// Puts the `k` highest logits first, in descending order; the rest follow in no order.
    fn sort_prefix(&mut self, k: usize) {
        let k = k.min(self.items.len());
        if self.sorted || k == 0 {
            return;
        }
        if k < self.items.len() {
            self.items.select_nth_unstable_by(k - 1, by_logit_desc);
            self.items[..k].sort_unstable_by(by_logit_desc);
        } else {
            self.items.sort_unstable_by(by_logit_desc);
            self.sorted = true;
        }
    }

    /// Keeps the `k` most likely tokens, sorted; 0 keeps everything.
    pub fn top_k(&mut self, k: usize) {
        if k == 0 {
            return;
        }
        let k = k.min(self.items.len());
        self.sort_prefix(k);
        self.items.truncate(k);
        self.sorted = true;
    }

    /// Sets each `p` to the softmax of the current logits.
    pub fn softmax(&mut self) {
        let Some(max) = self.items.iter().map(|c| c.logit).max_by(f32::total_cmp) else { return };
        let mut sum = 0.0f32;
        for c in &mut self.items {
            c.p = (c.logit - max).exp();
            sum += c.p;
        }
        for c in &mut self.items {
            c.p /= sum;
        }
    }

    /// Keeps the smallest prefix of most likely tokens whose probabilities (softmax over the
    /// current candidates) sum to at least `p`, as llama.cpp's top-p does; `p >= 1` keeps all.
    pub fn top_p(&mut self, p: f32) {
        if p >= 1.0 || self.items.is_empty() {
            return;
        }
        self.softmax();
        // Most of the mass usually sits in a few hundred tokens: sort only those first and
        // fall back to a full sort when they do not reach `p` (llama.cpp's heuristic).
        let mut prefix = self.items.len().min(256);
        self.sort_prefix(prefix);
        let mut cum = 0.0f32;
        let mut keep = self.items.len();
        let mut i = 0;
        while i < self.items.len() {
            if i == prefix && !self.sorted {
                prefix = self.items.len();
                self.sort_prefix(prefix);
            }
            cum += self.items[i].p;
            if cum >= p {
                keep = i + 1;
                break;
            }
            i += 1;
        }
        if keep == self.items.len() {
            self.sort_prefix(keep);
        }
        self.items.truncate(keep);
        self.sorted = true;
    }

    /// Keeps tokens whose probability is at least `p` times the most likely token's, i.e. whose
    /// logit is at least `max + ln p`; `p <= 0` keeps all. The order is kept.
    pub fn min_p(&mut self, p: f32) {
        if p <= 0.0 || self.items.is_empty() {
            return;
        }
        let max = self.items.iter().map(|c| c.logit).fold(f32::NEG_INFINITY, f32::max);
        let min_logit = max + p.ln();
        self.items.retain(|c| c.logit >= min_logit);
    }

    /// Divides every logit by `t` (callers handle `t <= 0` as greedy).
    pub fn temperature(&mut self, t: f32) {
        for c in &mut self.items {
            c.logit /= t;
        }
    }

    /// The most likely candidate (the lowest id among equal logits).
    pub fn argmax(&self) -> Option<Candidate> {
        self.items.iter().copied().min_by(by_logit_desc)
    }

    /// Draws one candidate with probability softmax(logit), walking the current order.
    pub fn draw(&mut self, rng: &mut impl RngCore) -> Option<Candidate> {
        if self.items.len() <= 1 {
            return self.items.first().copied();
        }
        self.softmax();
        let target = unit_f64(rng);
        let mut cum = 0.0f64;
        for c in &self.items {
            cum += c.p as f64;
            if cum > target {
                return Some(*c);
            }
        }
        // Rounding can leave the sum a hair under the target: the last token with any mass wins.
        self.items.iter().rev().find(|c| c.p > 0.0).copied()
    }
}

/// A uniform draw from [0, 1) with 53 random bits (what `rand`'s `Standard` gives for f64).
fn unit_f64(rng: &mut impl RngCore) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The recent tokens the penalties look at: a window of the last `last_n` ids and their counts.
#[derive(Clone, Debug, Default)]
pub struct TokenHistory {
    last_n: usize,
    window: VecDeque<u32>,
    counts: HashMap<u32, u32>,
}

impl TokenHistory {
    pub fn new(last_n: usize) -> Self {
        Self { last_n, window: VecDeque::with_capacity(last_n), counts: HashMap::new() }
    }

    /// Records a token, forgetting the oldest one once the window is full.
    pub fn push(&mut self, id: u32) {
        if self.last_n == 0 {
            return;
        }
        if self.window.len() >= self.last_n {
            if let Some(old) = self.window.pop_front() {
                if let Some(n) = self.counts.get_mut(&old) {
                    *n -= 1;
                    if *n == 0 {
                        self.counts.remove(&old);
                    }
                }
            }
        }
        self.window.push_back(id);
        *self.counts.entry(id).or_insert(0) += 1;
    }

    /// How often `id` occurs in the window.
    pub fn count(&self, id: u32) -> u32 {
        self.counts.get(&id).copied().unwrap_or(0)
    }

    pub fn clear(&mut self) {
        self.window.clear();
        self.counts.clear();
    }
}

/// The sampler chain of one generation: parameters, the seeded generator and the penalty history.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    n_vocab: usize,
    rng: ChaCha20Rng,
    history: TokenHistory,
    candidates: Candidates,
}

impl Sampler {
    /// Checks the parameters against a vocabulary of `n_vocab` tokens.
    pub fn new(params: SamplingParams, n_vocab: usize) -> Result<Self, SamplingError> {
        params.validate(n_vocab)?;
        Ok(Self {
            rng: ChaCha20Rng::seed_from_u64(params.seed),
            history: TokenHistory::new(params.repeat_last_n),
            candidates: Candidates::default(),
            n_vocab,
            params,
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Records a token (prompt or generated) for the penalties.
    pub fn accept(&mut self, id: u32) {
        self.history.push(id);
    }

    /// Forgets the history and restarts the generator from the seed.
    pub fn reset(&mut self) {
        self.history.clear();
        self.rng = ChaCha20Rng::seed_from_u64(self.params.seed);
    }

    /// Picks the next token from one step's `n_vocab` logits. It does not record the token:
    /// call [`Sampler::accept`] with it.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplingError> {
        if logits.len() != self.n_vocab {
            return Err(SamplingError::LogitCount { expected: self.n_vocab, got: logits.len() });
        }
        if let Some(i) = logits.iter().position(|l| l.is_nan() || *l == f32::INFINITY) {
            return Err(SamplingError::BadLogit { id: i as u32, value: logits[i] });
        }
        let p = &self.params;
        let c = &mut self.candidates;
        c.fill(logits);
        c.apply_logit_bias(&p.logit_bias);
        if p.penalties_enabled() {
            c.apply_penalties(&self.history, p.repeat_penalty, p.frequency_penalty, p.presence_penalty);
        }
        let best = c.argmax().ok_or(SamplingError::AllMasked)?;
        if best.logit == f32::NEG_INFINITY {
            return Err(SamplingError::AllMasked);
        }
        // Top-k, top-p and min-p all keep the argmax, so greedy needs none of them.
        if p.is_greedy() {
            return Ok(best.id);
        }
        c.top_k(p.top_k);
        c.top_p(p.top_p);
        c.min_p(p.min_p);
        c.temperature(p.temperature);
        let picked = c.draw(&mut self.rng).ok_or(SamplingError::AllMasked)?;
        Ok(picked.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn logits_of(probs: &[f32]) -> Vec<f32> {
        probs.iter().map(|p| p.ln()).collect()
    }

    fn sorted_ids(mut ids: Vec<u32>) -> Vec<u32> {
        ids.sort_unstable();
        ids
    }

    #[test]
    fn top_k_keeps_exactly_k_highest_in_order() {
        let mut c = Candidates::from_logits(&[0.1, 3.0, -1.0, 2.0, 2.5, 0.0]);
        c.top_k(3);
        assert_eq!(c.ids(), vec![1, 4, 3]);
        assert!(c.sorted);

        let mut c = Candidates::from_logits(&[0.1, 3.0, -1.0]);
        c.top_k(0);
        assert_eq!(c.ids(), vec![0, 1, 2], "k = 0 disables");
        c.top_k(10);
        assert_eq!(c.ids(), vec![1, 0, 2], "k beyond the vocabulary keeps all, sorted");
    }

    #[test]
    fn top_k_on_large_random_logits_matches_full_sort() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let logits: Vec<f32> = (0..5000).map(|_| rng.gen_range(-10.0..10.0)).collect();
        let mut reference: Vec<u32> = (0..5000).collect();
        reference.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        let mut c = Candidates::from_logits(&logits);
        c.top_k(40);
        assert_eq!(c.len(), 40);
        assert_eq!(c.ids(), reference[..40].to_vec());
    }

    #[test]
    fn top_p_keeps_smallest_prefix_reaching_p() {
        let probs = [0.15, 0.5, 0.05, 0.3];
        let cases: [(f32, Vec<u32>); 5] = [
            (0.3, vec![1]),
            (0.6, vec![1, 3]),
            (0.79, vec![1, 3]),
            (0.9, vec![1, 3, 0]),
            (0.99, vec![1, 3, 0, 2]),
        ];
        for (p, want) in cases {
            let mut c = Candidates::from_logits(&logits_of(&probs));
            c.top_p(p);
            assert_eq!(c.ids(), want, "top_p {p}");
        }
        let mut c = Candidates::from_logits(&logits_of(&probs));
        c.top_p(1.0);
        assert_eq!(c.ids(), vec![0, 1, 2, 3], "p = 1 disables and keeps the order");
        let mut c = Candidates::from_logits(&logits_of(&probs));
        c.top_p(0.0);
        assert_eq!(c.ids(), vec![1], "p = 0 keeps the single most likely token");
    }

    #[test]
    fn top_p_renormalizes_over_current_candidates() {
        // After top-k 2 the top token has 0.5/0.8 = 0.625 >= 0.6, so it alone is kept; over the
        // full vocabulary (0.5 < 0.6) the second token would have been kept too.
        let mut c = Candidates::from_logits(&logits_of(&[0.15, 0.5, 0.05, 0.3]));
        c.top_k(2);
        c.top_p(0.6);
        assert_eq!(c.ids(), vec![1]);
    }

    #[test]
    fn top_p_on_large_vocab_matches_naive_reference() {
        // More than 1024 candidates exercises the partial-sort path, including its fallback.
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        for (spread, p) in [(20.0f32, 0.9f32), (0.5, 0.95), (0.1, 0.5)] {
            let logits: Vec<f32> = (0..3000).map(|_| rng.gen_range(-spread..spread)).collect();
            let max = logits.iter().copied().fold(f32::MIN, f32::max);
            let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
            let mut order: Vec<u32> = (0..3000).collect();
            order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
            let mut cum = 0.0;
            let mut keep = order.len();
            for (i, &id) in order.iter().enumerate() {
                cum += (logits[id as usize] - max).exp() / sum;
                if cum >= p {
                    keep = i + 1;
                    break;
                }
            }
            let mut c = Candidates::from_logits(&logits);
            c.top_p(p);
            assert_eq!(c.len(), keep, "spread {spread} p {p}");
            assert_eq!(c.ids(), order[..keep].to_vec());
            assert!(keep > 256 || spread == 20.0, "the flat cases must need the full sort");
        }
    }

    #[test]
    fn min_p_is_relative_to_the_most_likely_token() {
        let probs = [0.15, 0.5, 0.05, 0.3];
        let mut c = Candidates::from_logits(&logits_of(&probs));
        c.min_p(0.2); // keeps p >= 0.1
        assert_eq!(c.ids(), vec![0, 1, 3]);
        let mut c = Candidates::from_logits(&logits_of(&probs));
        c.min_p(0.5); // keeps p >= 0.25
        assert_eq!(c.ids(), vec![1, 3]);
        let mut c = Candidates::from_logits(&logits_of(&probs));
        c.min_p(1.0);
        assert_eq!(c.ids(), vec![1]);
        let mut c = Candidates::from_logits(&logits_of(&probs));
        c.min_p(0.0);
        assert_eq!(c.len(), 4, "0 disables");
    }

    #[test]
    fn repeat_penalty_divides_positive_and_multiplies_negative() {
        let mut h = TokenHistory::new(64);
        for id in [0, 1, 1, 3] {
            h.push(id);
        }
        let mut c = Candidates::from_logits(&[2.0, -2.0, 1.0, 0.0]);
        c.apply_penalties(&h, 2.0, 0.0, 0.0);
        let l: Vec<f32> = c.items.iter().map(|c| c.logit).collect();
        assert_eq!(l, vec![1.0, -4.0, 1.0, 0.0]);
    }

    #[test]
    fn presence_and_frequency_subtract() {
        let mut h = TokenHistory::new(64);
        for id in [0, 1, 1] {
            h.push(id);
        }
        let mut c = Candidates::from_logits(&[2.0, -2.0, 1.0]);
        c.apply_penalties(&h, 1.0, 0.5, 0.25);
        let l: Vec<f32> = c.items.iter().map(|c| c.logit).collect();
        // id 0: 2 - (1*0.5 + 0.25); id 1: -2 - (2*0.5 + 0.25); id 2 unseen.
        assert_eq!(l, vec![1.25, -3.25, 1.0]);

        let mut c = Candidates::from_logits(&[2.0, -2.0, 1.0]);
        c.apply_penalties(&h, 2.0, 0.5, 0.25);
        let l: Vec<f32> = c.items.iter().map(|c| c.logit).collect();
        assert_eq!(l, vec![0.25, -5.25, 1.0], "repeat first, then subtraction");
    }

    #[test]
    fn history_window_forgets_old_tokens() {
        let mut h = TokenHistory::new(2);
        for id in [5, 6, 6] {
            h.push(id);
        }
        assert_eq!(h.count(5), 0);
        assert_eq!(h.count(6), 2);
        h.push(7);
        assert_eq!((h.count(6), h.count(7)), (1, 1));
        let mut off = TokenHistory::new(0);
        off.push(1);
        assert_eq!(off.count(1), 0, "last_n = 0 records nothing");
    }

    #[test]
    fn sampler_penalizes_accepted_tokens_only_within_window() {
        let params = SamplingParams { repeat_penalty: 4.0, repeat_last_n: 1, ..SamplingParams::greedy() };
        let mut s = Sampler::new(params, 3).unwrap();
        let logits = [3.0, 2.0, 1.0];
        assert_eq!(s.sample(&logits).unwrap(), 0);
        s.accept(0);
        assert_eq!(s.sample(&logits).unwrap(), 1, "3/4 < 2");
        s.accept(2);
        assert_eq!(s.sample(&logits).unwrap(), 0, "token 0 left the window");
    }

    #[test]
    fn logit_bias_adds_and_bans() {
        let params = SamplingParams { logit_bias: vec![(2, 5.0), (0, f32::NEG_INFINITY)], ..SamplingParams::greedy() };
        let mut s = Sampler::new(params, 3).unwrap();
        assert_eq!(s.sample(&[3.0, 2.0, -1.0]).unwrap(), 2);

        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            logit_bias: vec![(0, f32::NEG_INFINITY)],
            ..SamplingParams::default()
        };
        let mut s = Sampler::new(params, 3).unwrap();
        for _ in 0..2000 {
            assert_ne!(s.sample(&[5.0, 0.0, 0.0]).unwrap(), 0, "a banned token is never drawn");
        }
    }

    #[test]
    fn all_masked_is_an_error() {
        let params = SamplingParams { logit_bias: vec![(0, f32::NEG_INFINITY), (1, f32::NEG_INFINITY)], ..Default::default() };
        let mut s = Sampler::new(params, 2).unwrap();
        assert_eq!(s.sample(&[1.0, 2.0]), Err(SamplingError::AllMasked));
    }

    #[test]
    fn greedy_picks_argmax_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplingParams::greedy(), 4).unwrap();
        assert_eq!(s.sample(&[1.0, 4.0, 4.0, -2.0]).unwrap(), 1);
        let mut s = Sampler::new(SamplingParams { temperature: -1.0, ..Default::default() }, 2).unwrap();
        assert_eq!(s.sample(&[0.0, 0.5]).unwrap(), 1, "negative temperature is greedy");
    }

    #[test]
    fn temperature_scales_logits() {
        let mut c = Candidates::from_logits(&[2.0, -1.0]);
        c.temperature(0.5);
        assert_eq!(c.items.iter().map(|c| c.logit).collect::<Vec<_>>(), vec![4.0, -2.0]);
    }

    fn flat_params(seed: u64) -> SamplingParams {
        SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed, ..Default::default() }
    }

    #[test]
    fn same_seed_same_tokens_other_seed_other_tokens() {
        let logits = vec![0.0f32; 100];
        let run = |seed| {
            let mut s = Sampler::new(flat_params(seed), 100).unwrap();
            (0..64).map(|_| s.sample(&logits).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        let mut s = Sampler::new(flat_params(42), 100).unwrap();
        let first: Vec<u32> = (0..8).map(|_| s.sample(&logits).unwrap()).collect();
        s.reset();
        let again: Vec<u32> = (0..8).map(|_| s.sample(&logits).unwrap()).collect();
        assert_eq!(first, again, "reset restarts the generator");
    }

    #[test]
    fn draws_follow_the_softmax() {
        let probs = [0.5f32, 0.3, 0.2];
        let mut s = Sampler::new(flat_params(1), 3).unwrap();
        let mut counts = [0usize; 3];
        let n = 20000;
        for _ in 0..n {
            counts[s.sample(&logits_of(&probs)).unwrap() as usize] += 1;
        }
        for (c, p) in counts.iter().zip(probs) {
            let freq = *c as f32 / n as f32;
            assert!((freq - p).abs() < 0.02, "frequency {freq} vs probability {p}");
        }
    }

    #[test]
    fn temperature_sharpens_the_draw() {
        // At temperature 0.1 a logit gap of 1 becomes 10: the top token wins almost always.
        let params = SamplingParams { temperature: 0.1, ..flat_params(3) };
        let mut s = Sampler::new(params, 2).unwrap();
        let hits = (0..1000).filter(|_| s.sample(&[1.0, 0.0]).unwrap() == 0).count();
        assert!(hits > 990, "{hits}");
    }

    #[test]
    fn chain_restricts_draws_to_top_k() {
        let params = SamplingParams { top_k: 2, ..flat_params(5) };
        let mut s = Sampler::new(params, 5).unwrap();
        let logits = [0.0, 0.3, 0.2, 0.1, 0.25];
        let seen: Vec<u32> = sorted_ids((0..500).map(|_| s.sample(&logits).unwrap()).collect());
        assert_eq!(*seen.first().unwrap(), 1);
        assert_eq!(*seen.last().unwrap(), 4);
        assert!(seen.contains(&1) && seen.contains(&4));
    }

    #[test]
    fn rejects_bad_parameters_and_logits() {
        let bad = |p: SamplingParams| Sampler::new(p, 10).unwrap_err();
        assert!(matches!(bad(SamplingParams { top_p: 1.5, ..Default::default() }), SamplingError::BadParameter { name: "top_p", .. }));
        assert!(matches!(bad(SamplingParams { temperature: f32::NAN, ..Default::default() }), SamplingError::BadParameter { name: "temperature", .. }));
        assert!(matches!(bad(SamplingParams { repeat_penalty: 0.0, ..Default::default() }), SamplingError::BadParameter { .. }));
        assert_eq!(
            bad(SamplingParams { logit_bias: vec![(10, 1.0)], ..Default::default() }),
            SamplingError::BiasTokenOutOfRange { id: 10, n_vocab: 10 }
        );
        assert!(matches!(bad(SamplingParams { logit_bias: vec![(1, f32::INFINITY)], ..Default::default() }), SamplingError::BadBias { .. }));
        let mut s = Sampler::new(SamplingParams::default(), 3).unwrap();
        assert_eq!(s.sample(&[0.0; 2]), Err(SamplingError::LogitCount { expected: 3, got: 2 }));
        assert!(matches!(s.sample(&[0.0, f32::NAN, 0.0]), Err(SamplingError::BadLogit { id: 1, .. })));
    }
}
