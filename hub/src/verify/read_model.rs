//! The read model (and the analytics file's copy of its tables) against the fold of the
//! log: the events up to the file's checkpoint are projected again, by the projector's
//! own [`apply_batch`], into a fresh in-memory read model, and every row of `stock`,
//! `products` and `reservations` is compared with the file's. The file is read in one
//! transaction, so on a running hub its rows and its checkpoint belong together. Events
//! the projector recorded as poison (skipped) are skipped here too.

use super::Problems;
use crate::read_model::{apply_batch, read_named_checkpoint, write_checkpoint, CHECKPOINT_NAME};
use crate::store::schema::{self, READ_MODEL};
use crate::store::ReadError;
use rusqlite::types::Value;
use rusqlite::Connection;
use shelfsync_common::EventEnvelope;
use std::cmp::Ordering;
use std::collections::HashSet;
use std::path::Path;

/// The tables compared and how many leading columns make their key (all 16-byte ids).
const TABLES: [(&str, usize); 3] = [("stock", 2), ("products", 1), ("reservations", 3)];

/// One file's projection, being refolded from the log.
pub(super) struct Fold {
    /// What the file is, for messages ("read model", "analytics").
    pub(super) label: &'static str,
    /// The file, inside its read transaction.
    file: Connection,
    /// The file's checkpoint: the fold stops there.
    pub(super) checkpoint: u64,
    /// Positions the file's projection skipped as poison.
    poison: HashSet<u64>,
    /// The fold.
    fold: Connection,
}

impl Fold {
    /// Opens `path` read-only and starts its read transaction at checkpoint `name`;
    /// `None` when there is no such file.
    pub(super) fn open(label: &'static str, path: &Path, name: &str) -> Result<Option<Self>, ReadError> {
        if !path.is_file() {
            return Ok(None);
        }
        let file = schema::open_read_only(path)?;
        file.execute_batch("BEGIN")?;
        let checkpoint = read_named_checkpoint(&file, name)?;
        let poison = file
            .prepare("SELECT position FROM poison_events")?
            .query_map([], |row| row.get::<_, i64>(0))?
            .map(|position| position.map(|p| p as u64))
            .collect::<Result<_, _>>()?;
        let mut fold = Connection::open_in_memory()?;
        schema::migrate(&mut fold, READ_MODEL)?;
        Ok(Some(Self {
            label,
            file,
            checkpoint,
            poison,
            fold,
        }))
    }

    /// The poison events the file's projection skipped.
    pub(super) fn poison_count(&self) -> usize {
        self.poison.len()
    }

    /// The next page of the log (events in position order, each once): the events up to
    /// the checkpoint are folded, the poison ones skipped as the projector did.
    pub(super) fn fold_page(&mut self, page: &[EventEnvelope]) -> Result<(), ReadError> {
        let mut rest = &page[..page.partition_point(|event| event.position <= self.checkpoint)];
        while !rest.is_empty() {
            let poison = rest.iter().position(|event| self.poison.contains(&event.position));
            let run = &rest[..poison.unwrap_or(rest.len())];
            if !run.is_empty() {
                apply_batch(&mut self.fold, run)?;
            }
            let Some(at) = poison else { break };
            // The checkpoint moves past it, as the projector's did.
            write_checkpoint(&self.fold, CHECKPOINT_NAME, rest[at].position)?;
            rest = &rest[at + 1..];
        }
        Ok(())
    }

    /// Compares every row of the file with the fold.
    pub(super) fn compare(self, problems: &mut Problems) -> Result<(), ReadError> {
        for (table, key_columns) in TABLES {
            let (columns, found) = rows(&self.file, table, key_columns)?;
            let (_, expected) = rows(&self.fold, table, key_columns)?;
            let where_ = |row: &Row| format!("{} {table} ({})", self.label, row.key_text());
            let (mut found, mut expected) = (found.iter().peekable(), expected.iter().peekable());
            loop {
                let order = match (found.peek(), expected.peek()) {
                    (None, None) => break,
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (Some(row), Some(wanted)) => row.key.cmp(&wanted.key),
                };
                match order {
                    Ordering::Less => {
                        let Some(row) = found.next() else { break };
                        problems.push(format!(
                            "{}: a row the fold of the log up to position {} does not have",
                            where_(row),
                            self.checkpoint
                        ));
                    }
                    Ordering::Greater => {
                        let Some(wanted) = expected.next() else { break };
                        problems.push(format!(
                            "{}: missing; the fold of the log up to position {} has {}",
                            where_(wanted),
                            self.checkpoint,
                            wanted.values_text(&columns)
                        ));
                    }
                    Ordering::Equal => {
                        let (Some(row), Some(wanted)) = (found.next(), expected.next()) else {
                            break;
                        };
                        for (column, (is, should)) in columns.iter().zip(row.values.iter().zip(&wanted.values)) {
                            if is != should {
                                problems.push(format!(
                                    "{}: {column} is {}, the fold of the log up to position {} gives {}",
                                    where_(row),
                                    show(is),
                                    self.checkpoint,
                                    show(should)
                                ));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A row of a compared table.
struct Row {
    /// The key columns' bytes, concatenated (ids are fixed-width, so this sorts as the
    /// key does).
    key: Vec<u8>,
    key_values: Vec<Value>,
    values: Vec<Value>,
}

impl Row {
    fn key_text(&self) -> String {
        self.key_values.iter().map(show).collect::<Vec<_>>().join(", ")
    }

    fn values_text(&self, columns: &[String]) -> String {
        let pairs: Vec<String> = columns
            .iter()
            .zip(&self.values)
            .map(|(column, value)| format!("{column} {}", show(value)))
            .collect();
        pairs.join(", ")
    }
}

/// The names of `table`'s columns after its key, and every row in key order.
fn rows(conn: &Connection, table: &str, key_columns: usize) -> Result<(Vec<String>, Vec<Row>), ReadError> {
    let mut stmt = conn.prepare(&format!("SELECT * FROM {table}"))?;
    let columns: Vec<String> = stmt.column_names().iter().map(|c| (*c).to_owned()).collect();
    let width = columns.len();
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values = (0..width)
            .map(|i| row.get::<_, Value>(i))
            .collect::<Result<Vec<_>, _>>()?;
        let rest = values.split_off(key_columns);
        let mut key = Vec::new();
        for value in &values {
            if let Value::Blob(bytes) = value {
                key.extend_from_slice(bytes);
            }
        }
        out.push(Row {
            key,
            key_values: values,
            values: rest,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok((columns[key_columns.min(width)..].to_vec(), out))
}

/// A value as people read it: an id as a UUID.
fn show(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Integer(v) => v.to_string(),
        Value::Real(v) => v.to_string(),
        Value::Text(v) => format!("{v:?}"),
        Value::Blob(v) => match <[u8; 16]>::try_from(v.as_slice()) {
            Ok(id) => uuid::Uuid::from_bytes(id).to_string(),
            Err(_) => hex::encode(v),
        },
    }
}
