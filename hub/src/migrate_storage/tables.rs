//! The event store's tables as `migrate-storage` sees them: each table's columns and key,
//! one cell type for both databases, and the three things done with a table (read its
//! rows in key order from SQLite, read them in the same order from PostgreSQL, write
//! them into PostgreSQL with a binary `COPY`).
//!
//! Both schemas hold the same columns with the same meaning (integers as 64-bit, ids as
//! bytes, JSON as text; see `migrations/postgres/0001_event_store.sql`), so one list of
//! columns per table drives the copy and the comparison, and a column added to the log
//! later is added here once.

use super::MigrateError;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A 64-bit integer.
    Int,
    /// Bytes (an id, a key, a digest).
    Bytes,
    /// Text (JSON, a name, a time).
    Text,
    /// Bytes or NULL.
    OptBytes,
    /// Text or NULL.
    OptText,
    /// A 64-bit integer or NULL.
    OptInt,
}

impl Kind {
    fn sql_type(self) -> Type {
        match self {
            Kind::Int | Kind::OptInt => Type::INT8,
            Kind::Bytes | Kind::OptBytes => Type::BYTEA,
            Kind::Text | Kind::OptText => Type::TEXT,
        }
    }
}

/// One table of the event store: its name and its columns (the first is the key the rows
/// are ordered by).
#[derive(Debug)]
pub struct Table {
    /// The table's name (the same on both sides).
    pub name: &'static str,
    /// Its columns; the first is its key.
    pub columns: &'static [(&'static str, Kind)],
}

/// The log itself, copied in position order.
pub const EVENTS: Table = Table {
    name: "events",
    columns: &[
        ("position", Kind::Int),
        ("event_id", Kind::Bytes),
        ("stream_key", Kind::Bytes),
        ("stream_version", Kind::Int),
        ("event_type", Kind::Text),
        ("schema_version", Kind::Int),
        ("data", Kind::Text),
        ("metadata", Kind::Text),
        ("fingerprint", Kind::Bytes),
    ],
};

/// Every other table, parents before the tables that reference them.
pub const OTHERS: [Table; 6] = [
    Table {
        name: "stores",
        columns: &[("id", Kind::Bytes), ("name", Kind::Text), ("created_at", Kind::Text)],
    },
    Table {
        name: "tokens",
        columns: &[
            ("id", Kind::Bytes),
            ("name", Kind::Text),
            ("role", Kind::Text),
            ("store_id", Kind::OptBytes),
            ("secret_sha256", Kind::Bytes),
            ("created_at", Kind::Text),
            ("revoked_at", Kind::OptText),
        ],
    },
    Table {
        name: "store_stats",
        columns: &[
            ("store_id", Kind::Bytes),
            ("rejected_uploads", Kind::Int),
            ("oversells", Kind::Int),
        ],
    },
    Table {
        name: "streams",
        columns: &[
            ("stream_key", Kind::Bytes),
            ("version", Kind::Int),
            ("last_position", Kind::Int),
            ("state", Kind::Text),
        ],
    },
    // Open enrollment codes keep working after the move (used and expired ones, until
    // pruned, keep saying so).
    Table {
        name: "enrollment_codes",
        columns: &[
            ("code_sha256", Kind::Bytes),
            ("store_id", Kind::Bytes),
            ("created_at", Kind::Int),
            ("expires_at", Kind::Int),
            ("used_at", Kind::OptInt),
        ],
    },
    // The id key: event ids derived from clients' idempotency keys stay the same.
    Table {
        name: "secrets",
        columns: &[("name", Kind::Text), ("value", Kind::Bytes)],
    },
];

/// One cell, read from either database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// Bytes.
    Bytes(Vec<u8>),
    /// Text.
    Text(String),
}

/// A row: its cells in the table's column order.
pub type Row = Vec<Value>;

static NULL_BYTES: Option<Vec<u8>> = None;
static NULL_TEXT: Option<String> = None;
static NULL_INT: Option<i64> = None;

impl Value {
    /// The cell as a PostgreSQL parameter of a column of `kind`.
    pub fn param(&self, kind: Kind) -> &(dyn ToSql + Sync) {
        match self {
            Value::Int(v) => v,
            Value::Bytes(v) => v,
            Value::Text(v) => v,
            Value::Null if kind == Kind::OptText => &NULL_TEXT,
            Value::Null if kind == Kind::OptInt => &NULL_INT,
            Value::Null => &NULL_BYTES,
        }
    }

    /// The cell as a SQLite parameter.
    pub fn sqlite(&self) -> rusqlite::types::Value {
        match self {
            Value::Null => rusqlite::types::Value::Null,
            Value::Int(v) => rusqlite::types::Value::Integer(*v),
            Value::Bytes(v) => rusqlite::types::Value::Blob(v.clone()),
            Value::Text(v) => rusqlite::types::Value::Text(v.clone()),
        }
    }

    /// A short form for messages: integers and text as they are, bytes in hex.
    pub fn show(&self) -> String {
        self.show_from(0)
    }

    /// [`Value::show`], a text shown from about byte `skip` (a char boundary or less).
    pub fn show_from(&self, skip: usize) -> String {
        let mut text = match self {
            Value::Null => "NULL".to_owned(),
            Value::Int(v) => v.to_string(),
            Value::Bytes(v) => format!("0x{}", hex::encode(v)),
            Value::Text(v) => {
                let start = (0..=skip.min(v.len()))
                    .rev()
                    .find(|at| v.is_char_boundary(*at))
                    .unwrap_or(0);
                let dots = if start > 0 { "..." } else { "" };
                format!("{dots}{:?}", &v[start..])
            }
        };
        if text.len() > 120 {
            let cut = (0..=117).rev().find(|at| text.is_char_boundary(*at)).unwrap_or(0);
            text.truncate(cut);
            text.push_str("...");
        }
        text
    }
}

impl Table {
    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The key column's name.
    pub fn key(&self) -> &'static str {
        self.columns[0].0
    }

    /// `SELECT` of every column, in key order, with an optional `WHERE` (SQLite's
    /// placeholders are `?1`..; PostgreSQL's `$1`..: pass the condition for the side).
    pub fn select(&self, condition: &str, postgres: bool) -> String {
        let key = self.key();
        // PostgreSQL orders text by the database's collation; SQLite by bytes.
        let order = match (postgres, self.columns[0].1) {
            (true, Kind::Text) => format!("{key} COLLATE \"C\""),
            _ => key.to_owned(),
        };
        let filter = if condition.is_empty() {
            String::new()
        } else {
            format!(" WHERE {condition}")
        };
        format!(
            "SELECT {} FROM {}{filter} ORDER BY {order}",
            self.column_list(),
            self.name
        )
    }

    /// Calls `each` with every row the SQLite query `sql` (from [`Table::select`]) returns.
    pub fn sqlite_rows(
        &self,
        conn: &rusqlite::Connection,
        sql: &str,
        params: &[rusqlite::types::Value],
        mut each: impl FnMut(Row) -> Result<(), MigrateError>,
    ) -> Result<(), MigrateError> {
        let mut statement = conn.prepare_cached(sql)?;
        let mut rows = statement.query(rusqlite::params_from_iter(params))?;
        while let Some(row) = rows.next()? {
            let mut cells = Vec::with_capacity(self.columns.len());
            for (index, (column, kind)) in self.columns.iter().enumerate() {
                use rusqlite::types::ValueRef;
                let cell = match (row.get_ref(index)?, kind) {
                    (ValueRef::Null, Kind::OptBytes | Kind::OptText | Kind::OptInt) => Value::Null,
                    (ValueRef::Integer(v), Kind::Int | Kind::OptInt) => Value::Int(v),
                    (ValueRef::Blob(v), Kind::Bytes | Kind::OptBytes) => Value::Bytes(v.to_vec()),
                    (ValueRef::Text(v), Kind::Text | Kind::OptText) => {
                        Value::Text(String::from_utf8(v.to_vec()).map_err(|_| {
                            MigrateError::Source(format!("{}.{column} holds text that is not UTF-8", self.name))
                        })?)
                    }
                    (other, _) => {
                        return Err(MigrateError::Source(format!(
                            "{}.{column} holds a {:?}, expected {kind:?}",
                            self.name,
                            other.data_type()
                        )))
                    }
                };
                cells.push(cell);
            }
            each(cells)?;
        }
        Ok(())
    }

    /// Calls `each` with every row the PostgreSQL query `sql` returns, streamed.
    pub fn postgres_rows(
        &self,
        client: &mut impl postgres::GenericClient,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        mut each: impl FnMut(Row) -> Result<(), MigrateError>,
    ) -> Result<(), MigrateError> {
        let mut rows = client.query_raw(sql, params.iter().copied())?;
        while let Some(row) = rows.next()? {
            let mut cells = Vec::with_capacity(self.columns.len());
            for (index, (_, kind)) in self.columns.iter().enumerate() {
                let cell = match kind {
                    Kind::Int => Value::Int(row.try_get(index)?),
                    Kind::Bytes => Value::Bytes(row.try_get(index)?),
                    Kind::Text => Value::Text(row.try_get(index)?),
                    Kind::OptBytes => row
                        .try_get::<_, Option<Vec<u8>>>(index)?
                        .map_or(Value::Null, Value::Bytes),
                    Kind::OptText => row
                        .try_get::<_, Option<String>>(index)?
                        .map_or(Value::Null, Value::Text),
                    Kind::OptInt => row.try_get::<_, Option<i64>>(index)?.map_or(Value::Null, Value::Int),
                };
                cells.push(cell);
            }
            each(cells)?;
        }
        Ok(())
    }

    /// Writes the rows `rows` produces (it calls its argument once per row) into the
    /// table on PostgreSQL with one binary `COPY`; returns how many were written.
    pub fn copy_in(
        &self,
        tx: &mut postgres::Transaction<'_>,
        rows: impl FnOnce(&mut dyn FnMut(Row) -> Result<(), MigrateError>) -> Result<(), MigrateError>,
    ) -> Result<u64, MigrateError> {
        let types: Vec<Type> = self.columns.iter().map(|(_, kind)| kind.sql_type()).collect();
        let sql = format!("COPY {} ({}) FROM STDIN (FORMAT binary)", self.name, self.column_list());
        let mut writer = postgres::binary_copy::BinaryCopyInWriter::new(tx.copy_in(&sql)?, &types);
        rows(&mut |row: Row| {
            let params: Vec<&(dyn ToSql + Sync)> = row
                .iter()
                .zip(self.columns)
                .map(|(value, (_, kind))| value.param(*kind))
                .collect();
            Ok(writer.write(&params)?)
        })?;
        Ok(writer.finish()?)
    }
}
