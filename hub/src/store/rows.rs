//! One view of a stored row for both backends: the event log's rows are decoded (into an
//! [`shelfsync_common::EventEnvelope`], a token, a store) by one function each, whether the
//! row came from SQLite or from PostgreSQL. Both schemas store the same columns with the
//! same meaning: integers as 64-bit, ids and keys as bytes, JSON as text.

use super::ReadError;

/// A row of a query, read by column index.
pub trait StoredRow {
    /// An integer column.
    fn int(&self, index: usize) -> Result<i64, ReadError>;
    /// A text column.
    fn text(&self, index: usize) -> Result<&str, ReadError>;
    /// A bytes column that may be NULL.
    fn opt_bytes(&self, index: usize) -> Result<Option<&[u8]>, ReadError>;

    /// A bytes column.
    fn bytes(&self, index: usize) -> Result<&[u8], ReadError> {
        self.opt_bytes(index)?
            .ok_or_else(|| ReadError::Corrupt(format!("column {index} is NULL")))
    }

    /// A bytes column of exactly `N` bytes (an id, a digest).
    fn fixed<const N: usize>(&self, index: usize) -> Result<[u8; N], ReadError> {
        fixed(self.bytes(index)?, index)
    }

    /// A bytes column of `N` bytes that may be NULL.
    fn opt_fixed<const N: usize>(&self, index: usize) -> Result<Option<[u8; N]>, ReadError> {
        self.opt_bytes(index)?.map(|bytes| fixed(bytes, index)).transpose()
    }
}

fn fixed<const N: usize>(bytes: &[u8], index: usize) -> Result<[u8; N], ReadError> {
    bytes
        .try_into()
        .map_err(|_| ReadError::Corrupt(format!("column {index}: {} bytes, expected {N}", bytes.len())))
}

impl StoredRow for rusqlite::Row<'_> {
    fn int(&self, index: usize) -> Result<i64, ReadError> {
        Ok(self.get(index)?)
    }

    fn text(&self, index: usize) -> Result<&str, ReadError> {
        self.get_ref(index)?
            .as_str()
            .map_err(|e| ReadError::Corrupt(format!("column {index}: {e}")))
    }

    fn opt_bytes(&self, index: usize) -> Result<Option<&[u8]>, ReadError> {
        self.get_ref(index)?
            .as_blob_or_null()
            .map_err(|e| ReadError::Corrupt(format!("column {index}: {e}")))
    }
}

impl StoredRow for postgres::Row {
    fn int(&self, index: usize) -> Result<i64, ReadError> {
        Ok(self.try_get(index)?)
    }

    fn text(&self, index: usize) -> Result<&str, ReadError> {
        Ok(self.try_get(index)?)
    }

    fn opt_bytes(&self, index: usize) -> Result<Option<&[u8]>, ReadError> {
        Ok(self.try_get(index)?)
    }
}

/// A position as both backends store it (a signed 64-bit integer). Positions past
/// `i64::MAX` do not exist; one asked for (a cursor from outside) reads as the largest,
/// after which there is nothing, instead of wrapping to a negative number that would
/// read the log from its start.
pub fn sql_position(position: u64) -> i64 {
    i64::try_from(position).unwrap_or(i64::MAX)
}
