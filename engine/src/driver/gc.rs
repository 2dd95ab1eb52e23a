//! Retention: `sluice gc` removes stored artifact files that nothing within retention uses: no
//! run that is still going or ended within `--keep`, no registered model version, no file of
//! MLflow's artifact proxy, and no cache entry younger than that
//! (older entries are removed first; their results are past retention). Run by a server, it
//! spares files placed within a grace period, so that a result being recorded while runs go
//! on is safe (a placed file's record follows it within the same batch).

use std::collections::HashSet;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Engine, Result};

/// One stored file gc removed (or would remove).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GcItem {
    pub digest: String,
    pub size: u64,
}

/// What `gc` did, or with `dry_run` what it would do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GcReport {
    pub dry_run: bool,
    /// The retention, in ms.
    pub keep_ms: i64,
    /// Stored files no run or cache entry within retention uses.
    pub removed: Vec<GcItem>,
    pub removed_bytes: u64,
    /// Stored files kept because something within retention uses them.
    pub kept: usize,
    pub kept_bytes: u64,
    /// Unused files spared because they were placed within the grace period.
    pub recent: usize,
    /// Cache entries older than the retention.
    pub cache_entries_removed: usize,
}

impl Engine {
    /// Removes (or with `dry_run` lists) what retention no longer keeps. Files placed within
    /// `grace` are spared (a server's runs may be recording them).
    pub fn gc(&self, keep: Duration, dry_run: bool, grace: Duration) -> Result<GcReport> {
        let now = self.now_ms();
        let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now.saturating_sub(keep_ms);
        let live: HashSet<u64> = self
            .store
            .runs()?
            .into_iter()
            .filter(|r| !r.state.is_terminal() || r.finished_at.unwrap_or(r.created_at) >= cutoff)
            .map(|r| r.id)
            .collect();
        let mut used: HashSet<String> = self
            .store
            .artifacts(None)?
            .into_iter()
            .filter(|a| live.contains(&a.run))
            .map(|a| a.digest)
            .collect();
        // Registered versions' files live as long as their versions; files MLflow's clients
        // uploaded through the artifact proxy are runs' artifacts, kept like MLflow keeps them.
        for v in self.store.model_versions(None)? {
            used.extend(v.files.into_values().map(|f| f.digest));
        }
        used.extend(self.store.proxy_files("")?.into_iter().map(|(_, f)| f.digest));
        let mut stale = Vec::new();
        for entry in self.store.cache_entries()? {
            if entry.at < cutoff {
                stale.push(entry.key);
            } else {
                used.extend(entry.artifacts.into_iter().map(|a| a.digest));
            }
        }
        let blobs = self.store.blobs();
        let mut report = GcReport {
            dry_run,
            keep_ms,
            removed: Vec::new(),
            removed_bytes: 0,
            kept: 0,
            kept_bytes: 0,
            recent: 0,
            cache_entries_removed: stale.len(),
        };
        for file in blobs.stored() {
            if used.contains(&file.digest) {
                report.kept += 1;
                report.kept_bytes += file.size;
            } else if file.placed_ms > now - grace.as_millis() as i64 {
                report.recent += 1;
            } else {
                report.removed_bytes += file.size;
                report.removed.push(GcItem { digest: file.digest, size: file.size });
            }
        }
        if !dry_run {
            for key in &stale {
                self.store.drop_cache_entry(key)?;
            }
            self.store.flush()?;
            for item in &report.removed {
                if let Err(e) = blobs.remove(&item.digest) {
                    tracing::warn!(digest = %item.digest, error = %e, "cannot remove a stored file");
                }
            }
        }
        Ok(report)
    }
}
