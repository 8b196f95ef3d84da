//! The `postgres` checkpoint source: a query (or a preset's) on a
//! `[databases.NAME]`, every `interval` (default 10ms) and at once on a `NOTIFY` to
//! the optional `listen` channel. One task per target (per instance with
//! `databases = {...}`): one query per interval per database serves every held
//! read, and held reads never query the database themselves.
//!
//! `listen` keeps one extra connection per target outside the pool (a `LISTEN`
//! needs its own session); it reconnects with backoff and, on each (re)connect,
//! wakes a read at once (notifications sent while disconnected are lost).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::{ReadError, Reader, Schedule};
use crate::checkpoint::Projection;
use crate::config::{PostgresSourceConfig, SourceKind};
use crate::database::{rows, Database, Databases, Sql};
use crate::position::PositionVector;

/// Shortest wait between reads, whatever the config says (no busy loop).
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// One database's checkpoint query.
pub struct QueryReader {
    pub database: Arc<Database>,
    pub sql: Sql,
}

impl Reader for QueryReader {
    async fn read(&self) -> Result<PositionVector, ReadError> {
        let rows = self.database.query(&self.sql).await?;
        Ok(rows::positions(&rows)?)
    }

    fn describe(&self) -> String {
        format!("database {}", self.database.name())
    }
}

/// Starts one task per target (and one listener per target with `listen`).
/// Targets naming a database that is not configured are skipped (validation
/// refuses them).
pub fn spawn(
    projection: Arc<Projection>,
    config: &PostgresSourceConfig,
    databases: &Databases,
    shutdown: &CancellationToken,
) {
    for (instance, db) in &config.targets {
        let Some(database) = databases.get(db) else {
            continue;
        };
        let wake = config.listen.as_ref().map(|channel| {
            let wake = Arc::new(Notify::new());
            tokio::spawn(listen(
                database.clone(),
                channel.clone(),
                wake.clone(),
                shutdown.child_token(),
            ));
            wake
        });
        let reader = QueryReader {
            database: database.clone(),
            sql: config.sql.clone(),
        };
        let schedule = Schedule {
            kind: SourceKind::Postgres,
            instance: instance.clone(),
            interval: config.interval.max(MIN_INTERVAL),
            wake,
        };
        tokio::spawn(super::run(
            projection.clone(),
            reader,
            schedule,
            shutdown.child_token(),
        ));
    }
}

/// Holds a `LISTEN channel` session and wakes a read on each notification.
async fn listen(
    database: Arc<Database>,
    channel: String,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let session = listen_once(&database, &channel, &wake);
        let ended = tokio::select! {
            _ = shutdown.cancelled() => return,
            ended = session => ended,
        };
        match ended {
            Ok(()) => delay = Duration::from_millis(100),
            Err(error) => {
                tracing::debug!(database = %database.name(), %channel, %error, "LISTEN session failed");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// One session: connect, `LISTEN`, forward notifications until the connection ends.
async fn listen_once(
    database: &Database,
    channel: &str,
    wake: &Notify,
) -> Result<(), tokio_postgres::Error> {
    let settings = database.config();
    let mut connect = settings.connect.clone();
    connect.connect_timeout(settings.connect_timeout);
    let (client, mut connection) = connect.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    let forward = async {
        // The channel name was checked (letters, digits, `_`) and is quoted.
        client
            .batch_execute(&format!("LISTEN \"{channel}\""))
            .await?;
        // Anything sent while no session listened is caught up by one read now.
        wake.notify_one();
        while rx.recv().await.is_some() {
            wake.notify_one();
        }
        Ok::<(), tokio_postgres::Error>(())
    };
    tokio::select! {
        ended = driver => ended,
        ended = forward => ended,
    }
}
