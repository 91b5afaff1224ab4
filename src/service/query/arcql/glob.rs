//! The `*` operator's wildcard matcher: `*` is any run of characters, `?` exactly one.
//!
//! Patterns come from untrusted clients and run against every candidate record, so the cost of
//! one match must not blow up on patterns built to make it (`*???...?x`, `*a*a*a*b`). A
//! backtracking matcher, even the two-pointer one with a single backtrack point, costs
//! O(text x pattern) there. This one compiles the pattern once into a bit-parallel NFA (the
//! Shift-And idea, with `*` as a self-loop): each text character costs one pass over
//! `ceil((tokens + 1) / 64)` machine words, so a match is linear in the text, never
//! backtracks, and stops as soon as no state is alive. A length check first rejects texts
//! shorter than the pattern's fixed characters without looking at them.

use std::collections::HashMap;

/// Bits of one state set, in 64-bit words. Bit `j` set: the first `j` non-`*` pattern
/// characters have been matched.
type Bits = Vec<u64>;

/// Which states a text character can advance into (bit `j + 1` for pattern token `j`).
#[derive(Debug, Clone)]
enum Advance {
    /// A character that occurs often in the pattern: a full mask.
    Dense(Bits),
    /// A rare character: the bits to set, so a pattern of many distinct characters does not
    /// cost a full mask per character.
    Sparse(Vec<usize>),
}

/// A compiled wildcard pattern. Build once per query, match against many texts.
#[derive(Debug, Clone)]
pub struct Glob {
    /// Non-`*` characters in the pattern: the least number of text characters a match needs.
    tokens: usize,
    /// Whether the pattern has a `*` at all; without one the text length must equal `tokens`.
    has_star: bool,
    /// Words per state set.
    words: usize,
    /// States that a `*` lets stay where they are on any character.
    loops: Bits,
    /// States advanced into on any character (`?` tokens).
    any: Bits,
    /// States advanced into by a specific character.
    chars: HashMap<char, Advance>,
}

fn set(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn get(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

impl Glob {
    /// Compiles `pattern`. Linear in its length; memory is bounded by about
    /// `tokens / 64` dense masks of `tokens / 64` words plus one entry per other token.
    pub fn new(pattern: &str) -> Glob {
        let mut tokens = 0usize;
        let mut star_at = Vec::new(); // gap indices (0..=tokens) that hold a `*`
        let mut positions: HashMap<char, Vec<usize>> = HashMap::new();
        let mut any_at = Vec::new();
        for c in pattern.chars() {
            match c {
                '*' => {
                    if star_at.last() != Some(&tokens) {
                        star_at.push(tokens);
                    }
                }
                '?' => {
                    any_at.push(tokens + 1);
                    tokens += 1;
                }
                c => {
                    positions.entry(c).or_default().push(tokens + 1);
                    tokens += 1;
                }
            }
        }
        let words = (tokens + 1).div_ceil(64);
        let mut loops = vec![0; words];
        for &g in &star_at {
            set(&mut loops, g);
        }
        let mut any = vec![0; words];
        for &p in &any_at {
            set(&mut any, p);
        }
        let chars = positions
            .into_iter()
            .map(|(c, ps)| {
                let adv = if ps.len() >= words {
                    let mut m = vec![0; words];
                    for p in ps {
                        set(&mut m, p);
                    }
                    Advance::Dense(m)
                } else {
                    Advance::Sparse(ps)
                };
                (c, adv)
            })
            .collect();
        Glob {
            tokens,
            has_star: !star_at.is_empty(),
            words,
            loops,
            any,
            chars,
        }
    }

    /// How much one match costs relative to a plain comparison: the machine words touched per
    /// text character. Used to price queries before they run.
    pub fn cost(&self) -> usize {
        self.words
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        // Cheap rejections first: every non-`*` token consumes exactly one character.
        let len = text.chars().count();
        if len < self.tokens || (!self.has_star && len != self.tokens) {
            return false;
        }
        let w = self.words;
        let mut state: Bits = vec![0; w];
        let mut next: Bits = vec![0; w];
        let mut shifted: Bits = vec![0; w];
        state[0] = 1;
        for c in text.chars() {
            // shifted = state << 1, across word boundaries.
            let mut carry = 0;
            for i in 0..w {
                shifted[i] = (state[i] << 1) | carry;
                carry = state[i] >> 63;
            }
            for i in 0..w {
                next[i] = (shifted[i] & self.any[i]) | (state[i] & self.loops[i]);
            }
            match self.chars.get(&c) {
                Some(Advance::Dense(m)) => {
                    for i in 0..w {
                        next[i] |= shifted[i] & m[i];
                    }
                }
                Some(Advance::Sparse(ps)) => {
                    for &p in ps {
                        if get(&shifted, p) {
                            set(&mut next, p);
                        }
                    }
                }
                None => {}
            }
            std::mem::swap(&mut state, &mut next);
            if state.iter().all(|&x| x == 0) {
                return false;
            }
        }
        get(&state, self.tokens)
    }
}

/// What [`Glob::cost`] will be for `pattern`, without compiling it.
pub fn cost_of(pattern: &str) -> usize {
    (pattern.chars().filter(|&c| c != '*').count() + 1).div_ceil(64)
}

/// One-off match, compiling `pattern` for this text only.
pub fn matches(pattern: &str, text: &str) -> bool {
    Glob::new(pattern).matches(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook recursive definition: exponential, but obviously right.
    pub(crate) fn reference(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, _) => t.is_empty(),
            (Some('*'), _) => reference(&p[1..], t) || (!t.is_empty() && reference(p, &t[1..])),
            (Some(_), None) => false,
            (Some(&c), Some(&d)) => (c == '?' || c == d) && reference(&p[1..], &t[1..]),
        }
    }

    fn check(p: &str, t: &str) -> bool {
        let pc: Vec<char> = p.chars().collect();
        let tc: Vec<char> = t.chars().collect();
        let got = matches(p, t);
        assert_eq!(got, reference(&pc, &tc), "pattern {p:?} text {t:?}");
        got
    }

    #[test]
    fn basics() {
        assert!(check("", ""));
        assert!(!check("", "a"));
        assert!(check("*", ""));
        assert!(check("**", "abc"));
        assert!(!check("?", ""));
        assert!(check("?", "é"));
        assert!(check("a*b*c", "aXbYbZc"));
        assert!(!check("a*b*c", "aXbYbZ"));
        assert!(check("*.png", "cat.png"));
        assert!(!check("*.png", "cat.pngx"));
        assert!(check("a?c", "abc"));
        assert!(!check("a?c", "ac"));
        assert!(check("*a*", "bab"));
    }

    #[test]
    fn crosses_word_boundaries() {
        // 130 tokens: three words of state, with matches and mismatches at the seams.
        let p = format!("{}*{}", "x".repeat(63), "y?".repeat(33));
        let t = format!("{}zz{}", "x".repeat(63), "yq".repeat(33));
        assert!(check(&p, &t));
        let t = format!("{}zz{}", "x".repeat(63), "yq".repeat(32));
        assert!(!check(&p, &t));
        // Many distinct characters: the sparse path.
        let p: String = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
        let t = p.clone();
        assert!(matches(&format!("*{p}*"), &format!("--{t}--")));
        assert!(!matches(&format!("*{p}*"), &format!("--{}--", &t[1..])));
    }

    /// The pathological patterns of issue 10 answer in linear time: each is matched against
    /// long texts many times over; with a backtracking matcher this loop runs for minutes.
    #[test]
    fn pathological_patterns_are_linear() {
        let text = "a".repeat(4000);
        let cases = [
            format!("*{}b", "?".repeat(3000)),
            format!("{}b", "*a".repeat(1000)),
            format!("*{}", "a*".repeat(1500)) + "b",
            format!("*{}*b", "a".repeat(2000)),
        ];
        for p in &cases {
            let g = Glob::new(p);
            for _ in 0..20 {
                assert!(!g.matches(&text));
            }
        }
        // And a match that has to run to the end.
        let g = Glob::new(&format!("*{}", "?".repeat(3000)));
        assert!(g.matches(&text));
    }
}
