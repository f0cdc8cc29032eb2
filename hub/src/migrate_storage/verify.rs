//! Checking that PostgreSQL holds what the SQLite file holds: the log by digests
//! computed on each side (SQLite's here, from the rows read; PostgreSQL's by the server,
//! so the log is not read back over the network), chunk by chunk so that a difference is
//! found in the chunk it is in; every other table row by row, in key order. A difference
//! is reported as the row and the column where the two sides part.

use super::tables::{Kind, Row, Table, Value, EVENTS};
use super::MigrateError;
use postgres::types::ToSql;
use sha2::{Digest, Sha256};

/// Rows compared per page (and events per digest chunk).
pub const PAGE: u64 = 10_000;

/// The events of a range, summed up the same way on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventDigest {
    /// How many events.
    pub count: u64,
    /// SHA-256 over every column of every event in position order (see [`encode`]).
    pub sha256: Option<[u8; 32]>,
}

/// The bytes a row contributes to a digest: each column in order, integers as 8 bytes
/// big-endian, bytes and text (UTF-8) as a 4-byte big-endian length and the bytes.
/// [`postgres_digest_sql`] builds the same bytes in SQL.
fn encode(row: &Row, out: &mut Vec<u8>) {
    for value in row {
        match value {
            Value::Int(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Bytes(v) => length_prefixed(v, out),
            Value::Text(v) => length_prefixed(v.as_bytes(), out),
            // The log has no nullable column.
            Value::Null => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
}

fn length_prefixed(bytes: &[u8], out: &mut Vec<u8>) {
    let length = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The digest query on PostgreSQL for events in `($1, $2]`, built from [`EVENTS`]'
/// columns so that it encodes exactly what [`encode`] does.
fn postgres_digest_sql() -> String {
    let parts: Vec<String> = EVENTS
        .columns
        .iter()
        .map(|(name, kind)| match kind {
            Kind::Int | Kind::OptInt => format!("int8send({name})"),
            Kind::Bytes | Kind::OptBytes => format!("int4send(length({name})) || {name}"),
            Kind::Text | Kind::OptText => {
                format!("int4send(length(convert_to({name}, 'UTF8'))) || convert_to({name}, 'UTF8')")
            }
        })
        .collect();
    format!(
        "SELECT count(*), sha256(string_agg({}, ''::bytea ORDER BY position))
         FROM events WHERE position > $1 AND position <= $2",
        parts.join(" || ")
    )
}

/// The digest of the SQLite file's events in `(after, upto]`.
pub fn sqlite_digest(conn: &rusqlite::Connection, after: u64, upto: u64) -> Result<EventDigest, MigrateError> {
    let sql = EVENTS.select("position > ?1 AND position <= ?2", false);
    let (mut count, mut bytes) = (0u64, Vec::new());
    EVENTS.sqlite_rows(conn, &sql, &[int(after), int(upto)], |row| {
        count += 1;
        encode(&row, &mut bytes);
        Ok(())
    })?;
    Ok(EventDigest {
        count,
        sha256: (count > 0).then(|| Sha256::digest(&bytes).into()),
    })
}

/// The digest of PostgreSQL's events in `(after, upto]`, computed by the server.
pub fn postgres_digest(
    client: &mut impl postgres::GenericClient,
    after: u64,
    upto: u64,
) -> Result<EventDigest, MigrateError> {
    let row = client.query_one(&postgres_digest_sql(), &[&position(after), &position(upto)])?;
    let count: i64 = row.try_get(0)?;
    let sha256: Option<Vec<u8>> = row.try_get(1)?;
    let sha256 = sha256
        .map(|bytes| <[u8; 32]>::try_from(bytes).map_err(|_| MigrateError::Target("sha256 is not 32 bytes".into())))
        .transpose()?;
    Ok(EventDigest {
        count: count as u64,
        sha256,
    })
}

/// What a comparison of the log found equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsChecked {
    /// Events compared.
    pub count: u64,
    /// SHA-256 over the chunk digests, the same on both sides.
    pub digest: String,
}

/// Compares the events in `(0, upto]` on both sides, chunk by chunk; calls `progress`
/// with the position reached. A chunk whose digests differ is compared row by row to say
/// where.
pub fn events(
    sqlite: &rusqlite::Connection,
    pg: &mut postgres::Client,
    upto: u64,
    mut progress: impl FnMut(u64),
) -> Result<EventsChecked, MigrateError> {
    let mut all = Sha256::new();
    let mut count = 0;
    let mut after = 0;
    while after < upto {
        let end = upto.min(after + PAGE);
        let (source, target) = (sqlite_digest(sqlite, after, end)?, postgres_digest(pg, after, end)?);
        if source != target {
            let upper = Some(Value::Int(position(end)));
            let at = first_difference(&EVENTS, sqlite, pg, Value::Int(position(after)), upper.as_ref())?;
            return Err(MigrateError::Mismatch(at.unwrap_or_else(|| {
                format!("events in positions {}..={end}: the digests differ", after + 1)
            })));
        }
        all.update(source.sha256.unwrap_or_default());
        count += source.count;
        after = end;
        progress(after);
    }
    Ok(EventsChecked {
        count,
        digest: hex::encode(all.finalize()),
    })
}

/// Compares every row of `table` on both sides; returns how many rows each side holds.
pub fn table(table: &Table, sqlite: &rusqlite::Connection, pg: &mut postgres::Client) -> Result<u64, MigrateError> {
    let rows = count(table, sqlite)?;
    match first_difference(table, sqlite, pg, Value::Null, None)? {
        Some(difference) => Err(MigrateError::Mismatch(difference)),
        None => Ok(rows),
    }
}

/// The number of rows of `table` in the SQLite file.
pub fn count(table: &Table, sqlite: &rusqlite::Connection) -> Result<u64, MigrateError> {
    let rows: i64 = sqlite.query_row(&format!("SELECT count(*) FROM {}", table.name), [], |row| row.get(0))?;
    Ok(rows as u64)
}

/// The first row where the two sides differ, among the rows whose key is after `after`
/// (`Null` = from the first) and up to `upto`; `None` when they hold the same rows.
fn first_difference(
    table: &Table,
    sqlite: &rusqlite::Connection,
    pg: &mut postgres::Client,
    mut after: Value,
    upto: Option<&Value>,
) -> Result<Option<String>, MigrateError> {
    let (key, kind) = table.columns[0];
    loop {
        let (mut on_sqlite, mut on_pg) = (Vec::new(), Vec::new());
        let mut sqlite_params = Vec::new();
        let mut pg_params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        for (bound, op) in [(Some(&after).filter(|v| **v != Value::Null), ">"), (upto, "<=")] {
            if let Some(bound) = bound {
                sqlite_params.push(bound.sqlite());
                pg_params.push(bound.param(kind));
                on_sqlite.push(format!("{key} {op} ?{}", sqlite_params.len()));
                on_pg.push(format!("{key} {op} ${}", pg_params.len()));
            }
        }
        let limit = format!(" LIMIT {PAGE}");
        let mut source = Vec::new();
        table.sqlite_rows(
            sqlite,
            &(table.select(&on_sqlite.join(" AND "), false) + &limit),
            &sqlite_params,
            |row| {
                source.push(row);
                Ok(())
            },
        )?;
        let mut target = Vec::new();
        table.postgres_rows(
            pg,
            &(table.select(&on_pg.join(" AND "), true) + &limit),
            &pg_params,
            |row| {
                target.push(row);
                Ok(())
            },
        )?;
        if let Some(difference) = compare_page(table, &source, &target) {
            return Ok(Some(difference));
        }
        match source.last() {
            Some(last) if source.len() as u64 == PAGE => after = last[0].clone(),
            _ => return Ok(None),
        }
    }
}

/// The first difference between two pages of rows in key order.
fn compare_page(table: &Table, source: &[Row], target: &[Row]) -> Option<String> {
    let name = table.name;
    for index in 0..source.len().max(target.len()) {
        let (row, other) = match (source.get(index), target.get(index)) {
            (Some(row), Some(other)) if row == other => continue,
            (Some(row), Some(other)) => (row, other),
            (Some(row), None) => return Some(format!("{name}: {} is missing on PostgreSQL", describe(table, row))),
            (None, Some(other)) => return Some(format!("{name}: {} is on PostgreSQL only", describe(table, other))),
            (None, None) => return None,
        };
        if row[0] != other[0] {
            // Both are sorted: the smaller key is the one the other side lacks.
            let source_first = key_order(&row[0], &other[0]).is_lt();
            return Some(if source_first {
                format!("{name}: {} is missing on PostgreSQL", describe(table, row))
            } else {
                format!("{name}: {} is on PostgreSQL only", describe(table, other))
            });
        }
        let at = row.iter().zip(other).position(|(a, b)| a != b).unwrap_or(0);
        let column = table.columns[at].0;
        // Long texts are shown from a little before where they part.
        let skip = match (&row[at], &other[at]) {
            (Value::Text(a), Value::Text(b)) => a
                .char_indices()
                .zip(b.chars())
                .find(|((_, x), y)| x != y)
                .map_or(0, |((offset, _), _)| offset.saturating_sub(40)),
            _ => 0,
        };
        return Some(format!(
            "{name}: {}: column {column} is {} on SQLite but {} on PostgreSQL",
            describe(table, row),
            row[at].show_from(skip),
            other[at].show_from(skip)
        ));
    }
    None
}

fn key_order(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Int(a), Value::Int(b)) => a.cmp(b),
        (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
        (Value::Text(a), Value::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
        _ => std::cmp::Ordering::Equal,
    }
}

fn describe(table: &Table, row: &Row) -> String {
    format!("the row with {} {}", table.key(), row[0].show())
}

fn int(value: u64) -> rusqlite::types::Value {
    rusqlite::types::Value::Integer(position(value))
}

/// A position as both databases store it.
pub fn position(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
