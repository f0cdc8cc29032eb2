//! Which position last changed each [`ViewKey`]: the projector records, the query cache
//! checks (see [`TouchLog`]).

use super::*;

/// Which position last changed each [`ViewKey`], shared by the projector (which records
/// after each commit, before publishing the new projected position) and the query cache
/// (which treats an entry read at position `p` as invalid once its key was touched after
/// `p`). Keys are hashed onto a fixed array of slots holding the highest touching
/// position: memory stays bounded and nothing needs pruning; two keys sharing a slot only
/// cost an extra cache miss, never a stale answer.
pub struct TouchLog {
    slots: Box<[AtomicU64]>,
    hasher: RandomState,
}

impl Default for TouchLog {
    fn default() -> Self {
        Self::new()
    }
}

impl TouchLog {
    /// An empty log.
    pub fn new() -> Self {
        Self {
            slots: (0..TOUCH_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
        }
    }

    fn slot(&self, key: &ViewKey) -> &AtomicU64 {
        let index = self.hasher.hash_one(key) as usize % self.slots.len();
        &self.slots[index]
    }

    /// Records that the batch ending at `position` changed `key`.
    pub fn record(&self, key: &ViewKey, position: u64) {
        self.slot(key).fetch_max(position, Ordering::AcqRel);
    }

    /// The highest position known to have changed `key` (or a key sharing its slot).
    pub fn last_touch(&self, key: &ViewKey) -> u64 {
        self.slot(key).load(Ordering::Acquire)
    }

    /// Whether a value of `key` read at `position` is still current.
    pub fn is_current(&self, key: &ViewKey, position: u64) -> bool {
        self.last_touch(key) <= position
    }
}
