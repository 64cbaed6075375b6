//! The append-only event store in Postgres (the source of truth).
//!
//! Appends run on a caller-supplied connection, usually inside the caller's
//! transaction, so that a row of the caller's own (a user, an idempotency
//! record) and its events commit together. Every appended event also gets an
//! `event_outbox` row in the same transaction; the relay publishes those.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::envelope::{EventEnvelope, EventMeta, StreamVersion};
use crate::schema::Event;

/// Postgres channel the relay listens on: a `NOTIFY` wakes it at once.
/// Appends do not notify: `NOTIFY` serialises committing transactions on
/// a global queue lock (measured: about a fifth of the create throughput),
/// and the relay's 10 ms idle poll already bounds the wake-up delay.
pub const NOTIFY_CHANNEL: &str = "taskstream_events";

/// The migrations of the whole system (events, outbox, users, tokens, idempotency).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// What the writer believes the stream's current version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append after whatever is there (still atomic: a concurrent append conflicts).
    Any,
    /// The stream must be exactly at this version (0 = must not exist yet).
    Exact(StreamVersion),
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer got there first, or the expected version was wrong.
    #[error("stream {stream_id} is at version {actual:?}, expected {expected:?}")]
    Conflict {
        stream_id: Uuid,
        expected: ExpectedVersion,
        /// The version seen, when known (a lost race does not tell).
        actual: Option<StreamVersion>,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The current version of a stream (0 if it has no events).
pub async fn stream_version<'e>(
    db: impl PgExecutor<'e>,
    stream_id: Uuid,
) -> Result<StreamVersion, sqlx::Error> {
    let v: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM events WHERE stream_id = $1")
        .bind(stream_id)
        .fetch_one(db)
        .await?;
    Ok(v.unwrap_or(0) as StreamVersion)
}

/// Appends `events` to a stream. Returns the envelopes as stored.
///
/// Atomic with respect to other writers: the `(stream_id, version)` unique
/// constraint makes a concurrent append fail with [`AppendError::Conflict`];
/// nothing is ever overwritten. The caller commits (or rolls back).
pub async fn append(
    conn: &mut PgConnection,
    stream_id: Uuid,
    expected: ExpectedVersion,
    events: &[Event],
    meta: EventMeta,
) -> Result<Vec<EventEnvelope>, AppendError> {
    let current = match expected {
        // The insert itself checks the version (one round trip less).
        ExpectedVersion::Exact(v) if !events.is_empty() => v,
        _ => {
            let current = stream_version(&mut *conn, stream_id).await?;
            if let ExpectedVersion::Exact(v) = expected {
                if v != current {
                    return Err(AppendError::Conflict {
                        stream_id,
                        expected,
                        actual: Some(current),
                    });
                }
            }
            current
        }
    };
    let envelopes: Vec<EventEnvelope> = events
        .iter()
        .enumerate()
        .map(|(i, e)| EventEnvelope::new(stream_id, current + 1 + i as u64, e, meta))
        .collect();
    if envelopes.is_empty() {
        return Ok(envelopes);
    }
    let inserted = insert(conn, stream_id, current, &envelopes)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(db) if db.constraint() == Some("events_stream_version_key") => {
                AppendError::Conflict {
                    stream_id,
                    expected,
                    actual: None,
                }
            }
            other => AppendError::Database(other),
        })?;
    if inserted == 0 {
        // The stream was not at `current` when the insert ran.
        let actual = stream_version(&mut *conn, stream_id).await?;
        return Err(AppendError::Conflict {
            stream_id,
            expected,
            actual: Some(actual),
        });
    }
    Ok(envelopes)
}

/// Inserts the events and their outbox rows if the stream is at `at`;
/// returns how many were inserted (0: it was not).
async fn insert(
    conn: &mut PgConnection,
    stream_id: Uuid,
    at: StreamVersion,
    envelopes: &[EventEnvelope],
) -> Result<u64, sqlx::Error> {
    let mut event_ids = Vec::with_capacity(envelopes.len());
    let mut stream_ids = Vec::with_capacity(envelopes.len());
    let mut stream_types = Vec::with_capacity(envelopes.len());
    let mut versions = Vec::with_capacity(envelopes.len());
    let mut types = Vec::with_capacity(envelopes.len());
    let mut schemas = Vec::with_capacity(envelopes.len());
    let mut occurred = Vec::with_capacity(envelopes.len());
    let mut actors = Vec::with_capacity(envelopes.len());
    let mut correlations = Vec::with_capacity(envelopes.len());
    let mut causations: Vec<Option<Uuid>> = Vec::with_capacity(envelopes.len());
    let mut data = Vec::with_capacity(envelopes.len());
    for e in envelopes {
        event_ids.push(e.event_id);
        stream_ids.push(e.stream_id);
        stream_types.push(e.stream_type.as_str());
        versions.push(e.version as i64);
        types.push(e.event_type.as_str());
        schemas.push(e.schema as i32);
        occurred.push(e.occurred_at);
        actors.push(e.actor);
        correlations.push(e.correlation_id);
        causations.push(e.causation_id);
        data.push(e.data.clone());
    }
    let done = sqlx::query(
        "WITH inserted AS (
           INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version,
                               occurred_at, actor, correlation_id, causation_id, data)
           SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::int[],
                                $7::timestamptz[], $8::uuid[], $9::uuid[], $10::uuid[], $11::jsonb[])
            WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $12) = $13
           RETURNING global_position)
         INSERT INTO event_outbox (global_position) SELECT global_position FROM inserted",
    )
    .bind(&event_ids)
    .bind(&stream_ids)
    .bind(&stream_types)
    .bind(&versions)
    .bind(&types)
    .bind(&schemas)
    .bind(&occurred)
    .bind(&actors)
    .bind(&correlations)
    .bind(&causations)
    .bind(&data)
    .bind(stream_id)
    .bind(at as i64)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// The first event of a new stream, appended by a caller's own statement
/// once a condition of the caller's holds: how a write whose precondition
/// is a row of its own (a live-task slot, a membership row) commits in one
/// round trip, with no `BEGIN` and `COMMIT` around it.
///
/// The caller writes `WITH <its CTEs>, {ctes} SELECT ...`, where
/// [`FirstEvent::ctes`] inserts the event and its outbox row once for each
/// row of the caller's `gate` CTE (so the gate yields one row to append, none
/// to refuse), and binds [`FirstEvent::PARAMS`] parameters from
/// `first_param` on with [`FirstEvent::bind`]. The statement is atomic; a
/// stream that already exists fails it on the unique version
/// ([`is_version_conflict`]). The rows and columns stay this module's
/// business: a caller never names them.
#[derive(Debug, Clone)]
pub struct FirstEvent {
    envelope: EventEnvelope,
}

impl FirstEvent {
    /// Parameters [`Self::bind`] binds.
    pub const PARAMS: usize = 11;

    /// `event` as version 1 of `stream_id`.
    pub fn new(stream_id: Uuid, event: &Event, meta: EventMeta) -> Self {
        FirstEvent {
            envelope: EventEnvelope::new(stream_id, 1, event, meta),
        }
    }

    /// The CTEs `appended` (the event's global position, when appended)
    /// and its outbox row, gated on `gate`, with parameters `$first_param`
    /// to `$first_param + PARAMS - 1`.
    pub fn ctes(gate: &str, first_param: usize) -> String {
        let types = [
            "uuid",
            "uuid",
            "text",
            "bigint",
            "text",
            "int",
            "timestamptz",
            "uuid",
            "uuid",
            "uuid",
            "jsonb",
        ];
        let values: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(i, t)| format!("${}::{t}", first_param + i))
            .collect();
        format!(
            "appended AS (
               INSERT INTO events (event_id, stream_id, stream_type, version, event_type,
                                   schema_version, occurred_at, actor, correlation_id,
                                   causation_id, data)
               SELECT {} FROM {gate}
               RETURNING global_position),
             appended_outbox AS (
               INSERT INTO event_outbox (global_position) SELECT global_position FROM appended)",
            values.join(", ")
        )
    }

    /// Binds the event's values, in the order [`Self::ctes`] expects.
    pub fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let e = &self.envelope;
        query
            .bind(e.event_id)
            .bind(e.stream_id)
            .bind(e.stream_type.as_str())
            .bind(e.version as i64)
            .bind(&e.event_type)
            .bind(e.schema as i32)
            .bind(e.occurred_at)
            .bind(e.actor)
            .bind(e.correlation_id)
            .bind(e.causation_id)
            .bind(&e.data)
    }

    /// The envelope, as appended (when the statement appended it).
    pub fn envelope(&self) -> &EventEnvelope {
        &self.envelope
    }

    pub fn into_envelope(self) -> EventEnvelope {
        self.envelope
    }
}

/// True when `e` is a lost race for a stream version (the unique key on
/// `(stream_id, version)`): someone else appended that version first.
pub fn is_version_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.constraint() == Some("events_stream_version_key"))
}

/// The columns [`envelope_from_row`] reads, for `SELECT`s over `events`.
pub const ENVELOPE_COLUMNS: &str =
    "event_id, stream_id, stream_type, version, event_type, schema_version, \
     occurred_at, actor, correlation_id, causation_id, data";

/// Maps an `events` row (selected with [`ENVELOPE_COLUMNS`]) to its envelope.
pub fn envelope_from_row(row: &sqlx::postgres::PgRow) -> Result<EventEnvelope, sqlx::Error> {
    let stream_type: String = row.try_get("stream_type")?;
    let version: i64 = row.try_get("version")?;
    let schema: i32 = row.try_get("schema_version")?;
    let occurred_at: DateTime<Utc> = row.try_get("occurred_at")?;
    Ok(EventEnvelope {
        event_id: row.try_get("event_id")?,
        stream_id: row.try_get("stream_id")?,
        stream_type: stream_type
            .parse()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        version: version as StreamVersion,
        event_type: row.try_get("event_type")?,
        schema: schema as u32,
        occurred_at,
        actor: row.try_get("actor")?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        data: row.try_get("data")?,
    })
}

/// All events of one stream, in version order.
pub async fn load_stream<'e>(
    db: impl PgExecutor<'e>,
    stream_id: Uuid,
) -> Result<Vec<EventEnvelope>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {ENVELOPE_COLUMNS} FROM events WHERE stream_id = $1 ORDER BY version"
    ))
    .bind(stream_id)
    .fetch_all(db)
    .await?;
    rows.iter().map(envelope_from_row).collect()
}

/// The user events recorded at or after `from`, in position order (the
/// account directory's read; served by a partial index on `recorded_at`).
pub async fn load_user_events_since<'e>(
    db: impl PgExecutor<'e>,
    from: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<EventEnvelope>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {ENVELOPE_COLUMNS} FROM events \
         WHERE stream_type = 'user' AND recorded_at >= $1 ORDER BY global_position"
    ))
    .bind(from)
    .fetch_all(db)
    .await?;
    rows.iter().map(envelope_from_row).collect()
}

/// Why [`connect_and_migrate`] failed; each message names the step and
/// the driver's cause.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("postgres: cannot connect: {0}")]
    Connect(sqlx::Error),
    #[error("postgres: migrations failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
}

/// Connects with a bounded wait and applies the migrations (idempotent,
/// safe when several services start at once: sqlx takes a lock).
pub async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
) -> Result<sqlx::PgPool, ConnectError> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        // While Postgres is down, a request waits this long for a connection
        // before it is answered 503: short, so clients hear it promptly.
        .acquire_timeout(std::time::Duration::from_secs(2))
        .connect(url)
        .await
        .map_err(ConnectError::Connect)?;
    MIGRATOR.run(&pool).await.map_err(ConnectError::Migrate)?;
    Ok(pool)
}

/// True when `e` says Postgres cannot be reached or is shutting down, as
/// opposed to a query that failed on its own: the caller should answer 503
/// and let the client retry, not 500.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        // The connection broke mid-handshake or mid-reply.
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        // Class 08 (connection exception), class 53 (insufficient
        // resources: too many connections, out of memory or disk), 57014
        // (cancelled, e.g. by a statement timeout) and 57P01-57P03 (the
        // server is shutting down, or not yet accepting connections).
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08")
                || c.starts_with("53")
                || matches!(&*c, "57014" | "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// A real round trip, for readiness checks.
pub async fn ping(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}
