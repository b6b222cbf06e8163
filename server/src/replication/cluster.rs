//! Clustered mode: the member list, the node-to-node port, and forwarding a client's
//! command from a follower to the leader.
//!
//! A follower never executes a write itself: the command goes to the leader over the
//! cluster port (an application request of `redoubt_raft::network`), the leader runs it as
//! it would for its own client, waits until it is committed, and sends back the reply
//! bytes, which the follower writes to its client. When the link breaks, the leader
//! changes or an answer is late, the follower sends the same request again (to whichever
//! node leads by then) until [`FORWARD_TIMEOUT`]; the session table (`session`) makes a
//! write that already ran answer its recorded reply instead of running twice. Only when
//! the bound passes with the outcome still unknown is the client's connection closed (as
//! when a Redis master dies mid-command).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redoubt_protocol::ReplyBuf;

use super::session::{self, Lookup};
use super::Replicator;
use crate::cmd::{self, Ctx};
use crate::shared::Shared;

/// How long a follower keeps trying to get a forwarded command answered.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one attempt waits before the follower tries again (a write retried this way
/// is answered from the session table if it ran). Longer than a healthy commit by far;
/// short enough that a frozen or cut-off leader costs one election, not the whole bound.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

const FORWARD: u8 = 1;
const WHOAMI: u8 = 2;
const OK: u8 = 0;
/// Refused before running: safe to retry.
const NOT_LEADER: u8 = 1;
/// Ran, but its commit is unknown (leadership lost or no majority within the bound).
const UNKNOWN: u8 = 2;
/// Refused: a copy older than its session's last request, or sent too long ago. Nobody
/// should be waiting for it.
const STALE: u8 = 3;

/// Parses `--cluster 1@127.0.0.1:17001,2@127.0.0.1:17002,...` into id -> raft address.
pub fn parse_members(s: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut m = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) =
            part.split_once('@').ok_or_else(|| anyhow::anyhow!("cluster member '{part}' is not id@host:port"))?;
        let id: u64 = id.parse().map_err(|_| anyhow::anyhow!("cluster member '{part}': bad node id"))?;
        if id == 0 || addr.is_empty() {
            anyhow::bail!("cluster member '{part}': node ids start at 1 and need an address");
        }
        if m.insert(id, addr.to_string()).is_some() {
            anyhow::bail!("cluster member {id} listed twice");
        }
    }
    if m.is_empty() {
        anyhow::bail!("--cluster lists no members");
    }
    Ok(m)
}

/// A forwarded command: the client's database and protocol, its session (`seq` 0 for
/// reads, which need none), when it was first sent, and its arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct Forward {
    pub db: usize,
    pub resp3: bool,
    pub session: session::SessionId,
    pub seq: u64,
    pub sent_ms: i64,
    pub argv: Vec<Bytes>,
}

impl Forward {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.argv.iter().map(|a| a.len() + 5).sum::<usize>());
        out.push(FORWARD);
        crate::keyspace::serial::put_len(&mut out, self.db as u64);
        out.push(self.resp3 as u8);
        for n in [self.session.0, self.session.1, self.seq, self.sent_ms as u64] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        crate::keyspace::serial::put_len(&mut out, self.argv.len() as u64);
        for a in &self.argv {
            crate::keyspace::serial::put_bytes(&mut out, a);
        }
        out
    }

    fn decode(body: &[u8]) -> Option<Forward> {
        let payload = Bytes::copy_from_slice(body.get(1..)?);
        let mut c = super::codec::Cursor { b: &payload, pos: 0 };
        let db = c.len().ok()? as usize;
        let resp3 = c.u8().ok()? != 0;
        let session = (c.u64().ok()?, c.u64().ok()?);
        let (seq, sent_ms) = (c.u64().ok()?, c.u64().ok()? as i64);
        let argc = c.count(1).ok()?;
        if argc == 0 {
            return None;
        }
        let mut argv = Vec::with_capacity(argc);
        for _ in 0..argc {
            let n = c.len().ok()? as usize;
            argv.push(c.slice(n).ok()?);
        }
        (c.pos == payload.len()).then_some(Forward { db, resp3, session, seq, sent_ms, argv })
    }
}

/// The address this node's clients use: the first bound address and the port.
pub fn own_client_addr(shared: &Shared) -> String {
    let host = shared.config.read().bind.first().cloned().unwrap_or_else(|| "127.0.0.1".into());
    format!("{host}:{}", shared.port.load(std::sync::atomic::Ordering::Relaxed))
}

/// The leader's side of the cluster port's application requests.
pub async fn handle_app(shared: Arc<Shared>, body: Vec<u8>) -> Vec<u8> {
    match body.first() {
        Some(&WHOAMI) => own_client_addr(&shared).into_bytes(),
        Some(&FORWARD) => match run_forwarded(&shared, &body).await {
            Ok(reply) => {
                let mut out = Vec::with_capacity(reply.len() + 1);
                out.push(OK);
                out.extend_from_slice(&reply);
                out
            }
            Err(status) => vec![status],
        },
        _ => vec![NOT_LEADER],
    }
}

/// Runs a forwarded command as the leader: its reply, or why there is none (NOT_LEADER:
/// nothing ran; UNKNOWN: it ran but may not commit; STALE: refused, nobody waits).
async fn run_forwarded(shared: &Arc<Shared>, body: &[u8]) -> Result<Vec<u8>, u8> {
    let repl = shared.repl.get().ok_or(NOT_LEADER)?;
    let f = Forward::decode(body).ok_or(NOT_LEADER)?;
    if f.argv[0].eq_ignore_ascii_case(b"wait") && f.argv.len() == 3 {
        // WAIT sent to a follower: the follower's writes were committed here before it
        // answered them, so this log's end covers them. Bounded to fit one forwarding
        // attempt.
        let mut out = ReplyBuf::new(f.resp3);
        match wait_replicas_within(shared, &f.argv, Some(FORWARDED_WAIT_MAX)).await {
            Ok(n) => out.int(n),
            Err(e) if e.starts_with("ERR WAIT cannot be used with replica") => return Err(NOT_LEADER),
            Err(e) => out.error(&e),
        }
        return Ok(out.buf.to_vec());
    }
    let reads = cmd::lookup(&f.argv[0]).is_some_and(|s| s.flags & cmd::flags::READONLY != 0);
    if f.seq != 0 && crate::keyspace::now_ms() - f.sent_ms > session::MAX_FORWARD_AGE_MS {
        // Its session record may already be gone: running it could run it twice. (On a
        // first attempt this means the nodes' clocks disagree by that much.)
        tracing::warn!(age_ms = crate::keyspace::now_ms() - f.sent_ms, "refusing a forwarded write sent too long ago");
        return Err(STALE);
    }
    // A snapshot's write hold applies to forwarded writes as to local ones, and so does the
    // bound on uncommitted operations.
    while !reads && (shared.write_hold.load(Ordering::Acquire) || repl.backlog_full()) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (reply, ticket) = {
        let mut st = shared.state.lock();
        if st.repl.leader_epoch == 0 {
            return Err(NOT_LEADER);
        }
        let now = crate::keyspace::now_ms();
        let replay = match f.seq {
            0 => None,
            seq => match st.repl.sessions.lookup(f.session, seq) {
                Lookup::Run => None,
                Lookup::Replay(reply) => Some(reply),
                Lookup::Stale => return Err(STALE),
            },
        };
        let reply = match replay {
            // A retry of a write that ran: its reply once the entry holding it commits
            // (the ticket below covers everything recorded so far).
            Some(reply) => reply.to_vec(),
            None => {
                let mut out = ReplyBuf::new(f.resp3);
                let recorded_before = st.ks.effects.as_ref().map_or(0, |v| v.len());
                match cmd::lookup(&f.argv[0]) {
                    Some(spec) if spec.arity_ok(f.argv.len()) && f.db < st.ks.dbs.len() => {
                        st.ks.now_ms = now;
                        // A forwarded blocking command behaves as inside MULTI: it never waits.
                        let mut ctx = Ctx::detached(&mut st.ks, shared, &mut out, f.db, 0);
                        crate::conn::call(&mut ctx, spec, &f.argv);
                    }
                    Some(spec) => out.error(cmd::err::wrong_args(spec.name).text()),
                    None if f.argv[0] == cmd::tx::FORWARDED_EXEC && f.db < st.ks.dbs.len() => {
                        st.ks.now_ms = now;
                        let mut ctx = Ctx::detached(&mut st.ks, shared, &mut out, f.db, 0);
                        if let Err(e) = cmd::tx::forwarded(&mut ctx, &f.argv) {
                            out.error(e.text());
                        }
                    }
                    None => out.error(&cmd::unknown_command_error(&f.argv)),
                }
                let reply = out.buf.to_vec();
                // Only a write that changed something needs a record: one that recorded no
                // operation may run again on a retry, as if it had first run then.
                let recorded_now = st.ks.effects.as_ref().map_or(0, |v| v.len());
                if f.seq != 0 && recorded_now > recorded_before {
                    let op = st.repl.sessions.record(f.session, f.seq, Bytes::from(reply.clone()), now);
                    if let Some(fx) = st.ks.effects.as_mut() {
                        fx.push(op);
                    }
                }
                reply
            }
        };
        if !st.ks.ready.is_empty() {
            crate::conn::serve_ready(shared, &mut st);
        }
        (reply, repl.ticket(&st))
    };
    repl.wake_proposer();
    let mut rx = repl.subscribe();
    match tokio::time::timeout(super::COMMIT_TIMEOUT, Replicator::wait_committed(&mut rx, ticket)).await {
        Ok(true) => {}
        // It ran here, and may or may not commit: a retry will tell (the session table).
        _ => return Err(UNKNOWN),
    }
    if reads && !repl.confirm_leadership().await {
        // A read changes nothing: retrying it is safe.
        return Err(NOT_LEADER);
    }
    Ok(reply)
}

/// Sends a client's command to the leader and returns the reply bytes to write back, or an
/// error text. `Err(None)` means the outcome is unknown (the connection must close).
pub async fn forward(
    shared: &Shared,
    db: usize,
    resp3: bool,
    client: u64,
    argv: &[Bytes],
) -> Result<Vec<u8>, Option<String>> {
    let repl = shared.repl.get().ok_or(Some("ERR not durable".to_string()))?;
    let write = !cmd::lookup(&argv[0]).is_some_and(|s| s.flags & cmd::flags::READONLY != 0);
    let f = Forward {
        db,
        resp3,
        session: (repl.origin, client),
        seq: if write { repl.forward_seq.fetch_add(1, Ordering::Relaxed) + 1 } else { 0 },
        sent_ms: crate::keyspace::now_ms(),
        argv: argv.to_vec(),
    };
    let body = f.encode();
    let deadline = tokio::time::Instant::now() + FORWARD_TIMEOUT;
    // Whether some attempt may have run the write (then the client cannot be told that
    // nothing happened), and the error to give if the bound passes otherwise.
    let mut maybe_ran = false;
    let mut why = "CLUSTERDOWN No leader elected; retry later";
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        // No leader (an election is running): wait for one.
        let Some((leader, addr)) = repl.leader_raft_addr() else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        match repl.network.call_app(leader, &addr, body.clone(), left.min(ATTEMPT_TIMEOUT)).await {
            Ok(r) if r.first() == Some(&OK) => return Ok(r[1..].to_vec()),
            Ok(r) if r.first() == Some(&NOT_LEADER) => why = "TRYAGAIN Leadership is changing; retry the command",
            Ok(r) if r.first() == Some(&STALE) => {
                // Refused without running. Unless an earlier attempt may have run it, the
                // only cause is clocks that disagree by more than the refusal age.
                tracing::warn!("forwarded command refused as too old (do the nodes' clocks differ?)");
                if maybe_ran {
                    return Err(None);
                }
                return Err(Some(
                    "ERR the leader refused a forwarded write as too old: the nodes' clocks differ".into(),
                ));
            }
            // Ran on a leader that could not commit it (yet): ask again.
            Ok(_) => maybe_ran = true,
            Err(redoubt_raft::network::NetError::Unreachable { .. }) => {
                why = "TRYAGAIN The leader is unreachable; retry the command"
            }
            Err(e) => {
                tracing::debug!(error = %e, "forwarded command: no answer; retrying");
                maybe_ran = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if maybe_ran && write {
        tracing::warn!("forwarded write: outcome unknown after {FORWARD_TIMEOUT:?}; closing the client");
        return Err(None);
    }
    Err(Some(why.into()))
}

/// Asks a node for the address its clients use (for RAFT INFO's `leader_addr`).
pub async fn whoami(repl: &Replicator, id: u64, raft_addr: &str) -> Option<String> {
    let r = repl.network.call_app(id, raft_addr, vec![WHOAMI], Duration::from_secs(2)).await.ok()?;
    String::from_utf8(r).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse() {
        let m = parse_members("1@127.0.0.1:17001, 2@127.0.0.1:17002,3@h:3").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[&2], "127.0.0.1:17002");
        assert!(parse_members("1@a,1@b").is_err());
        assert!(parse_members("x@a").is_err());
        assert!(parse_members("0@a").is_err());
        assert!(parse_members("").is_err());
    }

    #[test]
    fn forward_round_trip() {
        let argv: Vec<Bytes> = vec![Bytes::from_static(b"SET"), Bytes::from_static(b"k"), Bytes::new()];
        let f = Forward { db: 3, resp3: true, session: (u64::MAX, 9), seq: 12, sent_ms: 1_700_000_000_000, argv };
        let enc = f.encode();
        assert_eq!(Forward::decode(&enc).as_ref(), Some(&f));
        for cut in 1..enc.len() {
            assert!(Forward::decode(&enc[..cut]).is_none());
        }
    }
}

/// RAFT ADD-LEARNER / PROMOTE / REMOVE / TRANSFER-LEADER: membership changes, run on the
/// leader and answered when openraft has committed them. Returns the RESP reply text.
pub async fn admin(shared: &Shared, argv: &[Bytes]) -> Result<&'static str, String> {
    use std::collections::BTreeSet;

    use openraft::ChangeMembers;

    let repl = shared.repl.get().ok_or("ERR RAFT is not available: this node runs with --durability none")?;
    if !repl.clustered {
        return Err("ERR this node has no raft address: start it with --raft-addr (or --cluster) to grow it".into());
    }
    let sub = String::from_utf8_lossy(&argv[1]).to_ascii_lowercase();
    let id = |a: &Bytes| -> Result<u64, String> {
        std::str::from_utf8(a)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| "ERR node id must be a positive integer".to_string())
    };
    let not_leader = |e: String| -> String {
        match repl.leader_client_addr.lock().clone() {
            Some((id, addr)) if e.contains("forward") || e.contains("Forward") => {
                format!("ERR not the leader: send membership changes to node {id} at {addr}")
            }
            _ => format!("ERR {e}"),
        }
    };
    match sub.as_str() {
        "add-learner" => {
            let node = redoubt_raft::NodeAddr {
                raft_addr: String::from_utf8_lossy(&argv[3]).into_owned(),
                client_addr: String::from_utf8_lossy(&argv[4]).into_owned(),
            };
            // Blocking: answers once the learner has caught up with the log.
            repl.raft.add_learner(id(&argv[2])?, node, true).await.map_err(|e| not_leader(e.to_string()))?;
            Ok("OK")
        }
        "promote" => {
            let ids = argv[2..].iter().map(id).collect::<Result<BTreeSet<u64>, _>>()?;
            repl.grown.store(true, std::sync::atomic::Ordering::Release);
            repl.sole_voter.store(false, std::sync::atomic::Ordering::Release);
            repl.raft
                .change_membership(ChangeMembers::AddVoterIds(ids), false)
                .await
                .map_err(|e| not_leader(e.to_string()))?;
            Ok("OK")
        }
        "remove" => {
            let n = id(&argv[2])?;
            let voter = repl.raft.metrics().borrow().membership_config.membership().voter_ids().any(|v| v == n);
            let change = if voter {
                ChangeMembers::RemoveVoters(BTreeSet::from([n]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([n]))
            };
            repl.raft.change_membership(change, false).await.map_err(|e| not_leader(e.to_string()))?;
            Ok("OK")
        }
        "transfer-leader" => {
            Err("ERR TRANSFER-LEADER is not available: openraft 0.9 cannot hand leadership over".into())
        }
        _ => Err(format!("ERR unknown subcommand '{sub}'. Try RAFT HELP.")),
    }
}

/// WAIT numreplicas timeout in a cluster: how many other members hold everything this node
/// had in its log when WAIT ran (so at least the connection's acknowledged writes, which
/// were committed before their replies), waiting up to `timeout` ms (0: forever) for
/// `numreplicas` of them.
/// The longest a WAIT sent to a follower waits on the leader (under one forwarding
/// attempt's bound, so a slow WAIT is not mistaken for a lost leader).
const FORWARDED_WAIT_MAX: Duration = Duration::from_millis(1500);

/// WAIT on the leader: how many followers hold the end of the log (which covers every
/// write acknowledged so far, the client's last one included).
pub async fn wait_replicas(shared: &Shared, argv: &[Bytes]) -> Result<i64, String> {
    wait_replicas_within(shared, argv, None).await
}

async fn wait_replicas_within(shared: &Shared, argv: &[Bytes], cap: Option<Duration>) -> Result<i64, String> {
    let parse = |a: &Bytes| {
        redoubt_protocol::num::parse_i64(a).ok_or_else(|| "ERR value is not an integer or out of range".to_string())
    };
    let want = parse(&argv[1])?;
    let timeout = parse(&argv[2])?;
    if timeout < 0 {
        return Err("ERR timeout is negative".into());
    }
    let repl = shared.repl.get().ok_or("ERR not durable")?;
    let mut metrics = repl.raft.metrics();
    if !metrics.borrow().state.is_leader() {
        return Err("ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.".into());
    }
    let target = metrics.borrow().last_log_index.unwrap_or(0);
    let me = repl.node_id;
    let count = |m: &openraft::RaftMetrics<u64, redoubt_raft::NodeAddr>| -> i64 {
        m.replication
            .as_ref()
            .map_or(0, |r| r.iter().filter(|(id, l)| **id != me && l.is_some_and(|l| l.index >= target)).count() as i64)
    };
    let wanted = (timeout > 0).then(|| Duration::from_millis(timeout as u64));
    let bound = match (wanted, cap) {
        (Some(w), Some(c)) => Some(w.min(c)),
        (w, c) => w.or(c),
    };
    let deadline = bound.map(|d| tokio::time::Instant::now() + d);
    loop {
        let n = count(&metrics.borrow_and_update());
        if n >= want {
            return Ok(n);
        }
        let changed = metrics.changed();
        match deadline {
            Some(d) => match tokio::time::timeout_at(d, changed).await {
                Ok(Ok(())) => {}
                _ => return Ok(count(&metrics.borrow())),
            },
            None => {
                if changed.await.is_err() {
                    return Ok(n);
                }
            }
        }
    }
}
