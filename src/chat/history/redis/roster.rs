//! Names and presence on Redis: the [`Roster`] of every server sharing it.
//!
//! # Keys
//!
//! ```text
//! chat:{room}:names   hash: lowercased name → "<expiry ms> <holder> <name>"
//!                     (holder: "<server hex>.<member id>"); the key itself
//!                     expires one lease after its last renewal
//! chat:nodes          hash: server hex → "<expiry ms> <members>", for the
//!                     census (HealthCheck)
//! ```
//!
//! Expiry times come from Redis's own clock (`TIME` inside the scripts), so
//! servers with skewed clocks still agree on whether a lease has run out.
//! A room's hash shares the room's hash tag with its stream and channel: on
//! a Redis Cluster they would live on the same shard.
//!
//! # The keeper
//!
//! One task per server renews every lease it holds, one script per room, all
//! in one pipeline, every lease/3: a server that dies stops renewing and its
//! names are free one lease later. The same script claims a name that is not
//! held yet — that is how a claim made while Redis was unreachable
//! ([`Claim::Unconfirmed`]) is made once Redis is back — and reports the
//! names another live holder has meanwhile: those members lose their name
//! ([`Deliver::name_lost`]). The first claim Redis sees wins.

use super::*;
use crate::chat::history::roster::{Census, Claim, Holder, Roster};

/// Default lease of a claimed name: renewed every third of it.
pub const DEFAULT_NAME_LEASE: Duration = Duration::from_secs(15);
/// The census key.
const NODES_KEY: &str = "chat:nodes";
/// How long a claim or a presence read may wait for Redis.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The lua prelude every roster script starts with: Redis's clock in ms.
macro_rules! script {
    ($body:literal) => {
        concat!(
            "local t = redis.call('TIME')\n",
            "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n",
            "local function live(v, holder)\n",
            "  if not v then return false end\n",
            "  local exp, h = string.match(v, '^(%d+) (%S+)')\n",
            "  return tonumber(exp) > now and h ~= holder\n",
            "end\n",
            $body
        )
    };
}

/// Claims or renews names. A name held by another live holder is not
/// touched, and is returned.
///
/// KEYS: names. ARGV: lease ms, then (lowercased name, holder, name)…
const RENEW_SCRIPT: &str = script!(
    r"
local lease = tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV, 3 do
  if live(redis.call('HGET', KEYS[1], ARGV[i]), ARGV[i + 1]) then
    table.insert(lost, ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], (now + lease) .. ' ' .. ARGV[i + 1] .. ' ' .. ARGV[i + 2])
  end
end
if redis.call('PTTL', KEYS[1]) < lease then redis.call('PEXPIRE', KEYS[1], lease) end
return lost
"
);

/// Lets a name go, if `holder` still holds it.
///
/// KEYS: names. ARGV: lowercased name, holder.
const RELEASE_SCRIPT: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.match(v, '^%d+ (%S+)') == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
";

/// The names held now (expired ones are removed).
///
/// KEYS: names.
const NAMES_SCRIPT: &str = script!(
    r"
local all = redis.call('HGETALL', KEYS[1])
local names = {}
for i = 1, #all, 2 do
  if live(all[i + 1], '') then
    table.insert(names, string.match(all[i + 1], '^%d+ %S+ (.*)$'))
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return names
"
);

/// Reports this server's members, and sums every live server's.
///
/// KEYS: nodes. ARGV: lease ms, server, members ('' to only read).
const CENSUS_SCRIPT: &str = script!(
    r"
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[2], (now + tonumber(ARGV[1])) .. ' ' .. ARGV[3])
end
local all = redis.call('HGETALL', KEYS[1])
local servers, members = 0, 0
for i = 1, #all, 2 do
  if live(all[i + 1], '') then
    servers = servers + 1
    members = members + tonumber(string.match(all[i + 1], '^%d+ (%d+)'))
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return {servers, members}
"
);

/// A name this server holds for one of its members.
#[derive(Debug, Clone)]
pub(super) struct Lease {
    holder: Holder,
    name: String,
}

/// The names this server holds, by room, then lowercased name.
pub(super) type Leases = HashMap<String, HashMap<String, Lease>>;

fn names_key(room: &str) -> String {
    format!("chat:{{{room}}}:names")
}

impl Shared {
    /// A connection for short commands (the one page reads use).
    async fn command_conn(&self) -> redis::RedisResult<Conn> {
        let mut slot = self.reader.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.connect().await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `script` with a bound on the wait; errors are counted.
    pub(super) async fn ask<T: redis::FromRedisValue>(
        &self,
        what: &str,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, String> {
        let attempt = async {
            let mut conn = self.command_conn().await?;
            invocation.invoke_async(&mut conn).await
        };
        match tokio::time::timeout(ASK_TIMEOUT, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                self.error(what, &e);
                // Perhaps a dead connection from before a restart.
                *self.reader.lock().await = None;
                Err(e.to_string())
            }
            Err(_) => {
                self.error(what, &"timed out");
                Err("timed out".to_owned())
            }
        }
    }

    fn up(&self) -> bool {
        self.writer_up.load(Ordering::Relaxed) && self.subscriber_up.load(Ordering::Relaxed)
    }
}

impl Roster for RedisHistory {
    fn claim<'a>(&'a self, room: &'a str, name: &'a str, holder: Holder) -> BoxFuture<'a, Claim> {
        Box::pin(async move {
            let shared = &self.shared;
            let key = name.to_lowercase();
            // Recorded first: whatever Redis answers, the keeper now owns
            // this lease (renews it, or makes the claim later).
            shared
                .leases
                .lock()
                .entry(room.to_owned())
                .or_default()
                .insert(
                    key.clone(),
                    Lease {
                        holder,
                        name: name.to_owned(),
                    },
                );
            if !shared.up() {
                return Claim::Unconfirmed("redis is unreachable".to_owned());
            }
            let script = redis::Script::new(RENEW_SCRIPT);
            let mut invocation = script.prepare_invoke();
            invocation
                .key(names_key(room))
                .arg(lease_ms(shared))
                .arg(&key)
                .arg(holder.key())
                .arg(name);
            match shared.ask::<Vec<String>>("name claim", invocation).await {
                Ok(lost) if lost.is_empty() => Claim::Held,
                Ok(_) => {
                    self.forget(room, &key, holder);
                    Claim::Taken
                }
                Err(why) => Claim::Unconfirmed(format!("redis: {why}")),
            }
        })
    }

    fn release(&self, room: &str, name: &str, holder: Holder) {
        let key = name.to_lowercase();
        if !self.forget(room, &key, holder) {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let room = room.to_owned();
        tokio::spawn(async move {
            let script = redis::Script::new(RELEASE_SCRIPT);
            let mut invocation = script.prepare_invoke();
            invocation.key(names_key(&room)).arg(&key).arg(holder.key());
            if shared
                .ask::<Value>("name release", invocation)
                .await
                .is_err()
            {
                // Redis unreachable (or a shard failing over): the keeper
                // tries again, so that the name is free as soon as Redis is
                // back rather than a lease later — a member cut off by the
                // outage often comes back under the same name.
                shared.releases.lock().push((room, key, holder));
            }
        });
    }

    fn names<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Option<Vec<String>>> {
        Box::pin(async move {
            if !self.shared.up() {
                return None;
            }
            let script = redis::Script::new(NAMES_SCRIPT);
            let mut invocation = script.prepare_invoke();
            invocation.key(names_key(room));
            let mut names: Vec<String> = self.shared.ask("presence", invocation).await.ok()?;
            names.sort();
            Some(names)
        })
    }

    fn census(&self) -> BoxFuture<'_, Option<Census>> {
        Box::pin(async move {
            if !self.shared.up() {
                return None;
            }
            let script = redis::Script::new(CENSUS_SCRIPT);
            let mut invocation = script.prepare_invoke();
            invocation
                .key(NODES_KEY)
                .arg(lease_ms(&self.shared))
                .arg("")
                .arg("");
            let (servers, members): (u32, u64) =
                self.shared.ask("census", invocation).await.ok()?;
            Some(Census { servers, members })
        })
    }
}

impl RedisHistory {
    /// Drops a lease from the keeper's table; `false` if it was not there
    /// (or is another holder's).
    fn forget(&self, room: &str, key: &str, holder: Holder) -> bool {
        let mut leases = self.shared.leases.lock();
        let Some(names) = leases.get_mut(room) else {
            return false;
        };
        if names.get(key).is_none_or(|lease| lease.holder != holder) {
            return false;
        }
        names.remove(key);
        if names.is_empty() {
            leases.remove(room);
        }
        true
    }
}

fn lease_ms(shared: &Shared) -> u64 {
    u64::try_from(shared.options.name_lease.as_millis()).unwrap_or(u64::MAX)
}

/// The keeper task: renews (or makes) every claim this server holds and
/// reports its members for the census, every lease/3. See the module docs.
pub(super) async fn keeper(shared: Arc<Shared>, hub: Weak<dyn Deliver>) {
    let period = shared.options.name_lease / 3;
    let renew = redis::Script::new(RENEW_SCRIPT);
    let census = redis::Script::new(CENSUS_SCRIPT);
    loop {
        tokio::time::sleep(period).await;
        let Some(deliver) = hub.upgrade() else {
            return;
        };
        if !shared.up() {
            continue;
        }
        let node = deliver.node_id();
        let members = deliver.members_here();
        drop(deliver);
        let rooms: Vec<(String, Vec<(String, Lease)>)> = shared
            .leases
            .lock()
            .iter()
            .map(|(room, names)| {
                let names = names.iter().map(|(k, l)| (k.clone(), l.clone())).collect();
                (room.clone(), names)
            })
            .collect();
        let releases = std::mem::take(&mut *shared.releases.lock());
        let mut commands = Vec::with_capacity(rooms.len() + releases.len() + 1);
        for (room, names) in &rooms {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(renew.get_hash())
                .arg(1)
                .arg(names_key(room))
                .arg(lease_ms(&shared));
            for (key, lease) in names {
                cmd.arg(key).arg(lease.holder.key()).arg(&lease.name);
            }
            commands.push((room.clone(), cmd));
        }
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(census.get_hash())
            .arg(1)
            .arg(NODES_KEY)
            .arg(lease_ms(&shared))
            .arg(format!("{node:x}"))
            .arg(members);
        commands.push((NODES_KEY.to_owned(), cmd));
        let release = redis::Script::new(RELEASE_SCRIPT);
        for (room, key, holder) in &releases {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(release.get_hash())
                .arg(1)
                .arg(names_key(room))
                .arg(key)
                .arg(holder.key());
            commands.push((room.clone(), cmd));
        }
        let ran = async {
            let mut conn = shared.command_conn().await?;
            // The scripts may not be cached (a fresh or restarted Redis, a
            // promoted replica): loading is cheap and makes the EVALSHAs
            // below safe.
            renew.prepare_invoke().load_async(&mut conn).await?;
            census.prepare_invoke().load_async(&mut conn).await?;
            release.prepare_invoke().load_async(&mut conn).await?;
            conn.pipelined(commands).await
        };
        let answers = match tokio::time::timeout(ASK_TIMEOUT, ran).await {
            Ok(Ok(answers)) => answers,
            Ok(Err(e)) => {
                shared.error("name renewal", &e);
                shared.releases.lock().extend(releases);
                *shared.reader.lock().await = None;
                continue;
            }
            Err(_) => {
                shared.error("name renewal", &"timed out");
                shared.releases.lock().extend(releases);
                continue;
            }
        };
        for ((room, names), answer) in rooms.iter().zip(answers) {
            let lost: Vec<String> = redis::from_redis_value(answer).unwrap_or_default();
            for key in lost {
                let Some((_, lease)) = names.iter().find(|(k, _)| *k == key) else {
                    continue;
                };
                let mut leases = shared.leases.lock();
                if let Some(held) = leases.get_mut(room) {
                    held.remove(&key);
                }
                drop(leases);
                warn!(room = %room, user = %lease.name, "name held on another server: this member loses it");
                if let Some(deliver) = hub.upgrade() {
                    deliver.name_lost(room, lease.holder.member, &lease.name);
                }
            }
        }
    }
}
