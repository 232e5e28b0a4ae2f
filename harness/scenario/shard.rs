//! `--shard I/N`: a stable subset of the runs, so one scheduled job can be split across
//! CI runners.

use std::fmt;

use super::plan::RunPair;

/// Shard `index` of `count` (1-based), from `--shard I/N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which shard, 1..=count.
    pub index: usize,
    /// How many shards in all.
    pub count: usize,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Parse a `--shard I/N` value; requires 1 <= I <= N.
pub fn parse_shard(value: &str) -> anyhow::Result<Shard> {
    let bad = |why: &str| {
        crate::error::usage(format!(
            "--shard {value:?}: {why}; expected I/N with 1 <= I <= N, such as 2/4"
        ))
    };
    let (i, n) = value.split_once('/').ok_or_else(|| bad("no '/'"))?;
    let index: usize = i
        .trim()
        .parse()
        .map_err(|_| bad("I is not a whole number"))?;
    let count: usize = n
        .trim()
        .parse()
        .map_err(|_| bad("N is not a whole number"))?;
    if count == 0 {
        return Err(bad("N must be at least 1"));
    }
    if index == 0 || index > count {
        return Err(bad("I is out of range"));
    }
    Ok(Shard { index, count })
}

/// The pairs of one shard. Pairs are dealt round-robin in the order given (plan order, which
/// is the same on every machine), so shards differ in size by at most one and together
/// hold every pair exactly once.
pub fn shard(pairs: &[RunPair], which: Shard) -> Vec<RunPair> {
    pairs
        .iter()
        .enumerate()
        .filter(|(k, _)| k % which.count == which.index - 1)
        .map(|(_, p)| p.clone())
        .collect()
}
