//! Where Redis is: one instance (the default), or a Redis Cluster given by
//! several seed nodes — and a connection to either that the rest of the
//! store uses without asking which.
//!
//! What changes on a cluster, and why nothing else has to:
//!
//! * **Keys.** Every key of a room, and its channel, carry the room as a
//!   hash tag (`chat:{room}:…`): Redis hashes only the part in braces, so a
//!   room lives in one slot, on one shard, and each script touches one slot
//!   — which a cluster requires. Rooms spread over the shards.
//! * **Pub/Sub.** Plain `PUBLISH` on a cluster is broadcast to every node;
//!   Redis 7's sharded Pub/Sub (`SPUBLISH`/`SSUBSCRIBE`) keeps a channel on
//!   its slot's shard, so a batch costs only that shard. The scripts publish
//!   with [`Backend::publish_command`].
//! * **Pipelines.** A cluster refuses a pipeline whose commands span slots;
//!   [`Conn::pipelined`] sends one pipeline per room instead, all at once.

use std::collections::HashMap;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};

use super::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use crate::chat::history::HistoryError;

/// One Redis, or a cluster.
pub(super) enum Backend {
    /// One instance.
    Single(Client),
    /// A Redis Cluster, from its seed nodes.
    Cluster {
        /// For commands.
        client: ClusterClient,
        /// The seed nodes, for the subscriber's own RESP3 client.
        seeds: Vec<String>,
    },
}

impl Backend {
    /// A single instance for one URL; a cluster for several (its seed
    /// nodes), or for one when `cluster` is set. Only the URLs are checked
    /// here.
    pub(super) fn open(urls: &[String], cluster: bool) -> Result<Backend, HistoryError> {
        let bad = |e: redis::RedisError| HistoryError(format!("redis url: {e}"));
        match urls {
            [] => Err(HistoryError("redis url: none given".to_owned())),
            [url] if !cluster => Ok(Backend::Single(Client::open(url.as_str()).map_err(bad)?)),
            seeds => Ok(Backend::Cluster {
                client: cluster_builder(seeds).build().map_err(bad)?,
                seeds: seeds.to_vec(),
            }),
        }
    }

    /// Whether this is a cluster.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Backend::Cluster { .. })
    }

    /// `PUBLISH` on one instance, `SPUBLISH` on a cluster.
    pub(super) fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// A multiplexed connection for commands (clones share it).
    pub(super) async fn connect(&self) -> RedisResult<Conn> {
        match self {
            Backend::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                Ok(Conn::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
            Backend::Cluster { client, .. } => {
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

/// A cluster client's settings: the same timeouts as a single instance's.
pub(super) fn cluster_builder(seeds: &[String]) -> ClusterClientBuilder {
    ClusterClient::builder(seeds.iter().map(String::as_str))
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
}

/// A connection to one instance or to a cluster.
#[derive(Clone)]
pub(super) enum Conn {
    /// One instance.
    Single(MultiplexedConnection),
    /// A cluster: commands are routed to their slot's shard.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

impl Conn {
    /// Runs `commands`, each labelled with the key (or room) that decides
    /// its slot, and returns their answers in order. One instance: one
    /// pipeline, one round trip. A cluster: one pipeline per label — the
    /// commands of one room keep their order — sent side by side.
    pub(super) async fn pipelined(
        &mut self,
        commands: Vec<(String, Cmd)>,
    ) -> RedisResult<Vec<Value>> {
        let total = commands.len();
        let conn = match self {
            Conn::Single(_) => {
                let mut pipe = redis::pipe();
                for (_, cmd) in commands {
                    pipe.add_command(cmd);
                }
                return pipe.query_async(self).await;
            }
            Conn::Cluster(conn) => conn.clone(),
        };
        // Grouped by label, remembering where each answer goes.
        let mut groups: HashMap<String, (Pipeline, Vec<usize>)> = HashMap::new();
        for (at, (label, cmd)) in commands.into_iter().enumerate() {
            let (pipe, places) = groups
                .entry(label)
                .or_insert_with(|| (redis::pipe(), Vec::new()));
            pipe.add_command(cmd);
            places.push(at);
        }
        let mut sent = tokio::task::JoinSet::new();
        for (_, (pipe, places)) in groups {
            let mut conn = conn.clone();
            sent.spawn(async move {
                let answers: RedisResult<Vec<Value>> = pipe.query_async(&mut conn).await;
                answers.map(|a| (places, a))
            });
        }
        let mut answers = vec![Value::Nil; total];
        while let Some(joined) = sent.join_next().await {
            let (places, values) = joined.map_err(|e| {
                redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "pipeline task failed",
                    e.to_string(),
                ))
            })??;
            for (at, value) in places.into_iter().zip(values) {
                if let Some(slot) = answers.get_mut(at) {
                    *slot = value;
                }
            }
        }
        Ok(answers)
    }
}
