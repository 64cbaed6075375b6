//! MongoDB connection shared by the projector and query-api.

use std::time::Duration;

use mongodb::bson::doc;
use mongodb::options::{ClientOptions, WriteConcern};
use mongodb::{Client, Database};

/// Why [`connect`] failed; each message names the step and the driver's cause.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("mongodb: bad url: {0}")]
    BadUrl(mongodb::error::Error),
    #[error("mongodb: {0}")]
    Client(mongodb::error::Error),
    /// The server did not answer the first `ping`.
    /// Named by its hosts: the URL may hold a password.
    #[error("mongodb at {hosts}: {cause}")]
    Unreachable {
        hosts: String,
        cause: mongodb::error::Error,
    },
}

/// How long a pooled connection may sit unused before it is closed
/// rather than used (the URL's `maxIdleTimeMS` overrides it).
pub const MAX_IDLE_TIME: Duration = Duration::from_secs(60);

/// Connects and proves the server answers (a `ping`), with bounded waits.
pub async fn connect(url: &str, database: &str) -> Result<Database, ConnectError> {
    connect_with(url, database, None).await
}

/// [`connect`], with every write of this client made with `write_concern`
/// (the projector's views; `None`: the URL's or the server's default).
pub async fn connect_with(
    url: &str,
    database: &str,
    write_concern: Option<WriteConcern>,
) -> Result<Database, ConnectError> {
    let options = client_options(url, write_concern).await?;
    let hosts = options
        .hosts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let client = Client::with_options(options).map_err(ConnectError::Client)?;
    let db = client.database(database);
    ping(&db)
        .await
        .map_err(|cause| ConnectError::Unreachable { hosts, cause })?;
    Ok(db)
}

/// The client's options: the URL's, with bounded waits, an idle limit
/// on pooled connections, and `write_concern` when given.
async fn client_options(
    url: &str,
    write_concern: Option<WriteConcern>,
) -> Result<ClientOptions, ConnectError> {
    let mut options = ClientOptions::parse(url)
        .await
        .map_err(ConnectError::BadUrl)?;
    if write_concern.is_some() {
        options.write_concern = write_concern;
    }
    options.server_selection_timeout = Some(Duration::from_secs(5));
    options.connect_timeout = Some(Duration::from_secs(5));
    options.app_name = Some("taskstream".into());
    // A pooled connection idle for long may have been closed by the server
    // or by something in between (SecantusDB closes them after 300 s, many
    // load balancers sooner); the next operation on it would fail with an
    // unexpected end of file. Drop idle ones first, unless the URL says.
    if options.max_idle_time.is_none() {
        options.max_idle_time = Some(MAX_IDLE_TIME);
    }
    Ok(options)
}

/// A real round trip, for readiness checks.
pub async fn ping(db: &Database) -> Result<(), mongodb::error::Error> {
    db.run_command(doc! { "ping": 1 }).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_pooled_connections_are_dropped_unless_the_url_says_otherwise() {
        let options = client_options("mongodb://127.0.0.1:27017/", None)
            .await
            .unwrap();
        assert_eq!(options.max_idle_time, Some(MAX_IDLE_TIME));
        assert_eq!(options.connect_timeout, Some(Duration::from_secs(5)));
        let options = client_options("mongodb://127.0.0.1:27017/?maxIdleTimeMS=5000", None)
            .await
            .unwrap();
        assert_eq!(options.max_idle_time, Some(Duration::from_secs(5)));
    }
}
