//! MongoDB connection shared by the projector and query-api.

use std::time::Duration;

use mongodb::bson::doc;
use mongodb::options::{ClientOptions, WriteConcern};
use mongodb::{Client, Database};

/// Connects and proves the server answers (a `ping`), with bounded waits.
pub async fn connect(url: &str, database: &str) -> Result<Database, String> {
    connect_with(url, database, None).await
}

/// [`connect`], with every write of this client made with `write_concern`
/// (the projector's views; `None`: the URL's or the server's default).
pub async fn connect_with(
    url: &str,
    database: &str,
    write_concern: Option<WriteConcern>,
) -> Result<Database, String> {
    let mut options = ClientOptions::parse(url)
        .await
        .map_err(|e| format!("mongodb: bad url: {e}"))?;
    if write_concern.is_some() {
        options.write_concern = write_concern;
    }
    options.server_selection_timeout = Some(Duration::from_secs(5));
    options.connect_timeout = Some(Duration::from_secs(5));
    options.app_name = Some("taskstream".into());
    let client = Client::with_options(options).map_err(|e| format!("mongodb: {e}"))?;
    let db = client.database(database);
    ping(&db)
        .await
        .map_err(|e| format!("mongodb at {url}: {e}"))?;
    Ok(db)
}

/// A real round trip, for readiness checks.
pub async fn ping(db: &Database) -> Result<(), String> {
    db.run_command(doc! { "ping": 1 })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
