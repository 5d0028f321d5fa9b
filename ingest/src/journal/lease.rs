//! The leader's lease: one server writes at a time. The leader holds the
//! key `P` + `leader` (its node id, with a time to live) and renews it; a
//! follower may take it only once it has lapsed. Every journal append and
//! snapshot is a script that first checks the lease, so a leader that lost
//! it (paused, partitioned, or its lease taken after it lapsed) cannot
//! write a single entry after its successor started: Redis, not timing,
//! decides.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::stage::JournalStatus;

/// Renews the lease if this node holds it (1), takes it if nobody does
/// (2), else 0.
const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
";

/// Appends a journal entry if this node holds the lease.
pub(crate) const APPEND: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('NOTLEADER this server does not hold the leader lease')
end
return redis.call('XADD', KEYS[2], ARGV[2], 'c', ARGV[3], 't', ARGV[4])
";

/// Makes the staged snapshot (`KEYS[4]`, written a piece at a time) the
/// snapshot (`KEYS[5]`), records where it covers to (`ARGV[2]`) and its
/// list of history segments (`ARGV[5]`, each written before), deletes the
/// segments the old list had and the new one has not (keys `ARGV[6]` +
/// id), and trims the journal behind it, if this node holds the lease.
/// The old list is read here, not remembered by the server, so a write
/// the server thought had failed leaves no segment behind for ever. Every
/// step is O(1) in the snapshot's size but the trim and the deletes.
pub(crate) const SNAPSHOT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('NOTLEADER this server does not hold the leader lease')
end
redis.call('RENAME', KEYS[4], KEYS[5])
local keep = {}
for id in string.gmatch(ARGV[5], '([^:,]+):[^,]*') do keep[id] = true end
local old = redis.call('HGET', KEYS[2], 'history')
if old then
  for id in string.gmatch(old, '([^:,]+):[^,]*') do
    if not keep[id] then redis.call('DEL', ARGV[6] .. id) end
  end
end
redis.call('HDEL', KEYS[2], 'engine')
redis.call('HSET', KEYS[2], 'next', ARGV[2], 'time_ms', ARGV[3], 'history', ARGV[5])
return redis.call('XTRIM', KEYS[3], 'MINID', ARGV[4])
";

/// This node's claim on the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The key (`P` + `leader`).
    pub key: String,
    /// This node's id (host, process, a random part).
    pub me: String,
    /// How long the lease lives without renewal.
    pub ttl: Duration,
}

/// Who holds the lease and for how much longer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's node id.
    pub node: String,
    /// Milliseconds left.
    pub ttl_ms: i64,
}

impl Lease {
    /// A claim for a new node id.
    pub fn new(key: String, ttl: Duration) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self {
            key,
            me: format!("{host}:{}:{nanos:08x}", std::process::id()),
            ttl,
        }
    }

    /// Takes the lease if nobody holds it.
    ///
    /// # Errors
    /// Redis does not answer.
    pub async fn acquire(&self, conn: &mut ConnectionManager) -> redis::RedisResult<bool> {
        let r: Option<String> = redis::cmd("SET")
            .arg(&self.key)
            .arg(&self.me)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(conn)
            .await?;
        Ok(r.is_some())
    }

    /// Who holds it now, if anyone.
    ///
    /// # Errors
    /// Redis does not answer.
    pub async fn holder(&self, conn: &mut ConnectionManager) -> redis::RedisResult<Option<Holder>> {
        let (node, ttl_ms): (Option<String>, i64) = redis::pipe()
            .cmd("GET")
            .arg(&self.key)
            .cmd("PTTL")
            .arg(&self.key)
            .query_async(conn)
            .await?;
        Ok(node.map(|node| Holder { node, ttl_ms }))
    }

    /// Renews the lease every fifth of its life until another node holds
    /// it; then sets `status.fenced` and stops. While Redis is away it
    /// keeps trying (nobody can take the lease meanwhile), and takes it
    /// again if Redis came back without it.
    pub fn keep(self, mut conn: ConnectionManager, status: Arc<JournalStatus>) {
        tokio::spawn(async move {
            let script = redis::Script::new(RENEW);
            let mut every = tokio::time::interval(self.ttl / 5);
            loop {
                every.tick().await;
                let r: redis::RedisResult<i64> = script
                    .key(&self.key)
                    .arg(&self.me)
                    .arg(self.ttl.as_millis() as u64)
                    .invoke_async(&mut conn)
                    .await;
                match r {
                    Ok(0) => {
                        tracing::error!(lease = %self.key, "another server holds the leader lease: this one stops writing");
                        status.fenced.store(true, Ordering::Relaxed);
                        return;
                    }
                    Ok(2) => {
                        tracing::warn!(lease = %self.key, "the leader lease was gone (Redis restarted?): taken again")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot renew the leader lease: Redis is away"),
                }
            }
        });
    }
}
