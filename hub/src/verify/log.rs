//! The event log's own invariants, checked row by row in position order: positions
//! 1..=head with no gap, every stream's versions 1..=n with none skipped or repeated,
//! every row decodes into an event, and the write side's `streams` table (each stream's
//! version and last position, which the writer starts from) agrees with the log.

use super::Problems;
use shelfsync_common::StreamId;
use std::collections::HashMap;

/// A stream key as people read it: the stream's name, or the bytes when the key is bad.
pub(super) fn stream_name(key: &[u8]) -> String {
    StreamId::from_key(key).map_or_else(|| format!("stream key {}", hex::encode(key)), |id| id.to_string())
}

/// The checks that follow the log one row at a time.
#[derive(Default)]
pub(super) struct LogCheck {
    /// The position the next row must have.
    next: u64,
    /// Per stream key: its last version and the position of that event.
    streams: HashMap<Vec<u8>, (u64, u64)>,
    /// Rows read.
    pub(super) rows: u64,
}

impl LogCheck {
    /// One row of the log; `decoded` is why it does not decode, if it does not.
    pub(super) fn row(
        &mut self,
        position: u64,
        stream_key: &[u8],
        version: u64,
        undecodable: Option<String>,
        problems: &mut Problems,
    ) {
        self.rows += 1;
        let expected = self.next.max(1);
        if position != expected {
            problems.push(format!(
                "positions {expected}..={} are missing: the log goes from {} to {position}",
                position.saturating_sub(1),
                expected - 1
            ));
        }
        self.next = position + 1;
        let (last, _) = self.streams.get(stream_key).copied().unwrap_or((0, 0));
        if version != last + 1 {
            problems.push(format!(
                "position {position}: {} has version {version}, expected {}",
                stream_name(stream_key),
                last + 1
            ));
        }
        self.streams.insert(stream_key.to_vec(), (version, position));
        if let Some(reason) = undecodable {
            problems.push(format!(
                "position {position} ({} version {version}) does not decode: {reason}",
                stream_name(stream_key)
            ));
        }
    }

    /// The number of streams seen.
    pub(super) fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// After the last row: the head the log reports, and the writer's `streams` rows
    /// (key, version, last position) when given, must agree with what the rows said.
    pub(super) fn finish(&self, head: u64, stream_rows: Option<Vec<(Vec<u8>, u64, u64)>>, problems: &mut Problems) {
        let last = self.next.saturating_sub(1);
        if head != last {
            problems.push(format!(
                "the log's head is {head} but its last row is at position {last}"
            ));
        }
        let Some(stream_rows) = stream_rows else {
            return;
        };
        let mut listed = std::collections::HashSet::new();
        for (key, version, position) in stream_rows {
            match self.streams.get(&key) {
                Some(&(v, p)) if (v, p) == (version, position) => {}
                Some(&(v, p)) => problems.push(format!(
                    "streams table: {} is at version {version}, last position {position}; the log has version {v} at position {p}",
                    stream_name(&key)
                )),
                None => problems.push(format!(
                    "streams table: {} is at version {version} but the log has no event of it",
                    stream_name(&key)
                )),
            }
            listed.insert(key);
        }
        for (key, (version, position)) in &self.streams {
            if !listed.contains(key) {
                problems.push(format!(
                    "streams table: {} is missing; the log has it at version {version}, position {position}",
                    stream_name(key)
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rows: &[(u64, u8, u64)]) -> Vec<String> {
        let (mut check, mut problems) = (LogCheck::default(), Problems::default());
        for &(position, stream, version) in rows {
            check.row(position, &[stream], version, None, &mut problems);
        }
        problems.found
    }

    #[test]
    fn a_gap_and_a_skipped_version_are_named() {
        assert!(check(&[(1, 1, 1), (2, 2, 1), (3, 1, 2)]).is_empty());
        let found = check(&[(1, 1, 1), (2, 1, 2), (4, 1, 4)]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("positions 3..=3 are missing"), "{found:?}");
        assert!(found[1].contains("has version 4, expected 3"), "{found:?}");
        let found = check(&[(2, 1, 1)]);
        assert!(found[0].starts_with("positions 1..=1 are missing"), "{found:?}");
    }
}
