//! The image decode lanes (for `confirmFileUpload`'s blurhash): a few decodes at once in all,
//! at most [`PER_ACCOUNT`] of them for one account, so one account confirming many large
//! images queues behind itself and cannot starve the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Decodes at once, in all (each may take up to the decode memory cap).
pub const LANES: usize = 2;
/// Decodes at once for one account.
pub const PER_ACCOUNT: usize = 1;
/// Accounts whose idle queues are kept before the idle ones are dropped.
const KEEP_IDLE: usize = 1024;

/// The lanes.
pub struct DecodeLanes {
    all: Arc<Semaphore>,
    accounts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Default for DecodeLanes {
    fn default() -> Self {
        Self {
            all: Arc::new(Semaphore::new(LANES)),
            accounts: Mutex::default(),
        }
    }
}

/// A lane held; the decode runs while it lives.
pub struct Lane {
    _account: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

impl DecodeLanes {
    /// Waits for a lane for `account` (its own share first, then one of the shared lanes).
    /// Cancel-safe: dropping the future gives back whatever it held.
    pub async fn acquire(&self, account: &str) -> Option<Lane> {
        let mine = {
            let mut m = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
            if m.len() >= KEEP_IDLE {
                m.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < PER_ACCOUNT);
            }
            m.entry(account.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(PER_ACCOUNT)))
                .clone()
        };
        let account = mine.acquire_owned().await.ok()?;
        let all = self.all.clone().acquire_owned().await.ok()?;
        Some(Lane {
            _account: account,
            _all: all,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn one_account_cannot_take_every_lane() {
        let lanes = DecodeLanes::default();
        let a1 = lanes.acquire("ann").await.unwrap();
        // Ann's second decode waits for her first, though a shared lane is free.
        assert!(lanes.acquire("ann").now_or_never().is_none());
        // Bob gets the free lane at once.
        let b1 = lanes.acquire("bob").await.unwrap();
        // Both lanes taken: a third account waits.
        assert!(lanes.acquire("cyd").now_or_never().is_none());
        drop(a1);
        let c1 = lanes.acquire("cyd").await.unwrap();
        drop((b1, c1));
        assert!(lanes.acquire("ann").await.is_some());
    }
}
