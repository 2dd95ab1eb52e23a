//! Rollouts, each kept whole under its id and written after every change (the driver
//! flushes), so that a restarted server resumes every rollout where it was.

use super::{Result, Store, decode, encode};
use crate::rollout::Rollout;

impl Store {
    /// Every rollout, oldest first.
    pub fn rollouts(&self) -> Result<Vec<Rollout>> {
        self.rollouts.iter().map(|kv| decode("rollout", &kv?.1)).collect()
    }

    pub fn rollout(&self, id: u64) -> Result<Option<Rollout>> {
        self.rollouts.get(id.to_be_bytes())?.map(|b| decode("rollout", &b)).transpose()
    }

    /// The rollout of `model`'s `alias` that has not ended, if one runs.
    pub fn active_rollout(&self, model: &str, alias: &str) -> Result<Option<Rollout>> {
        Ok(self
            .rollouts()?
            .into_iter()
            .rev()
            .find(|r| r.model == model && r.alias == alias && !r.phase.is_done()))
    }

    /// The id the next rollout gets.
    pub fn next_rollout_id(&self) -> Result<u64> {
        Ok(match self.rollouts.last()? {
            Some((k, _)) => <[u8; 8]>::try_from(&k[..]).map(u64::from_be_bytes).unwrap_or(0) + 1,
            None => 1,
        })
    }

    /// Writes a rollout's state (the caller flushes).
    pub fn put_rollout(&self, r: &Rollout) -> Result<()> {
        self.writable()?;
        self.rollouts.insert(r.id.to_be_bytes(), encode(r)).map_err(|e| self.broke(e))?;
        Ok(())
    }
}
