//! One client connection: read, decode, dispatch, reply.
//!
//! The loop reads whatever the socket has, decodes every complete request in the buffer,
//! runs them all under one acquisition of the keyspace lock, appends every reply to one
//! output buffer, and writes that buffer once: a pipelined batch costs one lock and one
//! write, however many commands it holds.
//!
//! Around each command sits Redis's `processCommand` logic: lookup and arity, AUTH gating,
//! MULTI queueing, the RESP2 subscriber restrictions, OOM checks with eviction, CLIENT PAUSE,
//! then the handler. Blocking commands register a waiter and park the connection until
//! another client's write serves them (see [`serve_ready`]) or their timeout fires.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use redoubt_protocol::{Limits, ProtocolError, ReplyBuf, RequestDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::cmd::{self, err, flags, BlockMode, BlockRequest, CmdError, Ctx, Spec};
use crate::keyspace::{now_ms, Blob, Keyspace};
use crate::replication::{Replicator, Ticket};
use crate::shared::{ClientInfo, Push, Shared, State, Waiter};

/// CLIENT REPLY mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyMode {
    On,
    Off,
    Skip,
}

/// Per-connection state that commands may change.
pub struct Conn {
    pub id: u64,
    pub info: Arc<ClientInfo>,
    pub db: usize,
    pub resp3: bool,
    pub authenticated: bool,
    /// Queued commands while in MULTI.
    pub multi: Option<Vec<Vec<Bytes>>>,
    /// A command failed to queue: EXEC must abort.
    pub multi_error: bool,
    /// READONLY: on a cluster follower, reads are served from the local state (possibly
    /// behind the leader) instead of going to the leader.
    pub stale_reads: bool,
    /// WATCHed keys: (db, key, expire time when watched or None if absent).
    pub watched: Vec<(usize, Blob, Option<i64>)>,
    pub subs: HashSet<Bytes>,
    pub psubs: HashSet<Bytes>,
    pub reply_mode: ReplyMode,
    /// Close once the pending replies are written (QUIT, protocol errors, CLIENT KILL).
    pub close: bool,
    pub monitor: bool,
    pub no_touch: bool,
}

impl Conn {
    pub fn in_subscribe_mode(&self) -> bool {
        !self.subs.is_empty() || !self.psubs.is_empty()
    }

    /// Drops every WATCH of this connection.
    pub fn unwatch(&mut self, ks: &mut Keyspace) {
        for (db, key, _) in self.watched.drain(..) {
            let k = (db, key);
            if let Some(ids) = ks.watched.get_mut(&k) {
                ids.retain(|&i| i != self.id);
                if ids.is_empty() {
                    ks.watched.remove(&k);
                }
            }
        }
        ks.dirty_watchers.remove(&self.id);
    }
}

/// What the connection loop must do after a batch.
enum Flow {
    Continue,
    Block(BlockRequest, Vec<Bytes>),
    /// CLIENT PAUSE is in effect for this command: retry it later.
    Paused(Vec<Bytes>),
    /// A write on a follower: the leader runs it.
    Forward(Vec<Bytes>),
    /// A RAFT membership change: answered when openraft has committed it.
    Admin(Vec<Bytes>),
}

/// Serves one accepted connection until it closes.
pub async fn serve(stream: TcpStream, shared: Arc<Shared>, id: u64) {
    let _ = stream.set_nodelay(true);
    let (addr, laddr) = match (stream.peer_addr(), stream.local_addr()) {
        (Ok(a), Ok(l)) => (a, l),
        _ => return,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let info = Arc::new(ClientInfo {
        id,
        addr,
        laddr,
        created: Instant::now(),
        name: Default::default(),
        lib_name: Default::default(),
        lib_ver: Default::default(),
        last_cmd: AtomicU32::new(u32::MAX),
        last_interaction_ms: now_ms().into(),
        db: 0.into(),
        resp: 2.into(),
        subs: 0.into(),
        psubs: 0.into(),
        in_multi: false.into(),
        blocked: false.into(),
        is_pubsub: false.into(),
        is_monitor: false.into(),
        no_evict: false.into(),
        queued: 0.into(),
        qbuf: 0.into(),
        soft_since_ms: 0.into(),
        tx,
        killed: false.into(),
        kill_signal: Default::default(),
    });
    let authenticated = shared.config.read().requirepass.is_none();
    shared.clients.insert(id, info.clone());
    let span = tracing::debug_span!("conn", id, %addr);
    let _e = span.enter();
    tracing::debug!("accepted");
    let conn = Conn {
        id,
        info,
        db: 0,
        resp3: false,
        authenticated,
        multi: None,
        multi_error: false,
        stale_reads: false,
        watched: Vec::new(),
        subs: HashSet::new(),
        psubs: HashSet::new(),
        reply_mode: ReplyMode::On,
        close: false,
        monitor: false,
        no_touch: false,
    };
    let mut c = Connection {
        batch_now: 0,
        batch_touched: false,
        stream,
        shared: shared.clone(),
        conn,
        rx,
        rbuf: BytesMut::with_capacity(16 * 1024),
        ticket: Ticket::default(),
        commit_rx: None,
        read_barrier: false,
        wrote_since_reads: false,
    };
    if let Err(e) = c.run().await {
        tracing::debug!(error = %e, "connection ended");
    }
    c.cleanup().await;
    shared.clients.remove(&id);
}

struct Connection {
    /// Operation time of the batch being run (unix ms).
    batch_now: i64,
    /// Whether the current batch ran a command that reads or writes data (its replies then
    /// wait for everything recorded so far to commit; INFO, PING, RAFT INFO... do not).
    batch_touched: bool,
    stream: TcpStream,
    shared: Arc<Shared>,
    conn: Conn,
    rx: mpsc::UnboundedReceiver<Push>,
    rbuf: BytesMut,
    /// Durable mode: the last op the pending replies depend on (they are held until it
    /// commits).
    ticket: Ticket,
    commit_rx: Option<watch::Receiver<Ticket>>,
    /// A read ran on the leader of a cluster: its reply waits for a leadership check.
    read_barrier: bool,
    /// Writes were recorded since the last commit wait, after any reads it covers: their
    /// commit by a majority of this term proves the leadership those reads need (see
    /// `await_commit`).
    wrote_since_reads: bool,
}

impl Connection {
    fn limits(&self) -> Limits {
        let c = self.shared.config.read();
        Limits {
            max_bulk_len: c.proto_max_bulk_len as i64,
            max_multibulk_len: i32::MAX as i64,
            query_buffer_limit: c.client_query_buffer_limit as usize,
        }
    }

    async fn run(&mut self) -> std::io::Result<()> {
        let mut decoder = RequestDecoder::new(self.limits());
        let mut out = ReplyBuf::new(false);
        let mut pending: Option<Vec<Bytes>> = None;
        loop {
            // 1. Run every complete request already buffered (with the current limits:
            // CONFIG SET proto-max-bulk-len applies to open connections too).
            decoder.set_limits(self.limits());
            let flow = self.run_batch(&mut decoder, &mut out, pending.take());
            self.conn.info.qbuf.store(self.rbuf.len(), Ordering::Relaxed);
            if !out.is_empty() {
                self.shared.counters.net_output_bytes.fetch_add(out.len() as u64, Ordering::Relaxed);
                // A client that stops reading must not pin us in write(): a kill (output
                // buffer limit, CLIENT KILL) interrupts the write.
                if !self.await_commit().await {
                    return Ok(());
                }
                let info = self.conn.info.clone();
                tokio::select! {
                    r = self.stream.write_all(&out.buf) => r?,
                    _ = info.kill_signal.notified() => return Ok(()),
                }
                out.buf.clear();
                if out.buf.capacity() > 1 << 20 {
                    // Don't keep a huge buffer around after one big reply.
                    out.buf = BytesMut::with_capacity(16 * 1024);
                }
            }
            if self.conn.close {
                let _ = self.stream.shutdown().await;
                return Ok(());
            }
            match flow {
                Flow::Block(req, argv) => {
                    if !self.wait_blocked(req, argv, &mut out).await? {
                        return Ok(());
                    }
                    continue;
                }
                Flow::Paused(argv) => {
                    self.wait_unpaused().await;
                    pending = Some(argv);
                    continue;
                }
                Flow::Admin(argv) if argv[0].eq_ignore_ascii_case(b"wait") => {
                    match crate::replication::cluster::wait_replicas(&self.shared, &argv).await {
                        Ok(n) => out.int(n),
                        Err(e) => out.error(&e),
                    }
                    continue;
                }
                Flow::Admin(argv) => {
                    match crate::replication::cluster::admin(&self.shared, &argv).await {
                        Ok(s) => out.simple(s),
                        Err(e) => out.error(&e),
                    }
                    continue;
                }
                Flow::Forward(mut argv) => {
                    // EVALSHA of a script this node knows goes as EVAL, so the leader need
                    // not have seen it (it learns it, and so does every node, via the log).
                    let ro = argv[0].eq_ignore_ascii_case(b"evalsha_ro");
                    if ro || argv[0].eq_ignore_ascii_case(b"evalsha") {
                        if let Some(body) = self.shared.scripts.lock().body(&argv[1]) {
                            argv[0] = Bytes::from_static(if ro { b"EVAL_RO" } else { b"EVAL" });
                            argv[1] = body;
                        }
                    }
                    let r = crate::replication::cluster::forward(
                        &self.shared,
                        self.conn.db,
                        self.conn.resp3,
                        self.conn.id,
                        &argv,
                    )
                    .await;
                    match r {
                        Ok(reply) => out.raw(&reply),
                        Err(Some(e)) => out.error(&e),
                        Err(None) => return Ok(()),
                    }
                    continue;
                }
                Flow::Continue => {}
            }
            // 2. Wait for more bytes or for a push. Keep room for a full read: without this,
            // BytesMut grows by tiny steps and every read returns a few bytes.
            if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                self.rbuf.reserve(16 * 1024);
            }
            let idle = self.shared.config.read().timeout;
            tokio::select! {
                r = self.stream.read_buf(&mut self.rbuf) => {
                    let n = r?;
                    if n == 0 {
                        return Ok(());
                    }
                    self.shared.counters.net_input_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    self.conn.info.last_interaction_ms.store(now_ms(), Ordering::Relaxed);
                }
                Some(p) = self.rx.recv() => {
                    if !self.handle_push(p, &mut out) {
                        if self.await_commit().await {
                            let _ = self.stream.write_all(&out.buf).await;
                        }
                        return Ok(());
                    }
                    self.drain_pushes(&mut out);
                    // Pushes (served pops, messages) may show ops other clients recorded.
                    self.ticket_from_others();
                }
                _ = tokio::time::sleep(Duration::from_secs(idle.max(1))), if idle > 0
                    && !self.conn.in_subscribe_mode() && !self.conn.monitor => {
                    let last = self.conn.info.last_interaction_ms.load(Ordering::Relaxed);
                    if now_ms() - last >= (idle as i64) * 1000 {
                        tracing::debug!("closing idle client");
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Encodes queued pushes without waiting.
    fn drain_pushes(&mut self, out: &mut ReplyBuf) {
        while let Ok(p) = self.rx.try_recv() {
            if !self.handle_push(p, out) {
                self.conn.close = true;
                return;
            }
        }
    }

    /// Encodes one push into `out`; false means the connection must close.
    fn handle_push(&mut self, p: Push, out: &mut ReplyBuf) -> bool {
        match p {
            Push::Message { pattern, channel, payload } => {
                let size = channel.len() + payload.len() + 32 + pattern.as_ref().map_or(0, |p| p.len());
                self.conn
                    .info
                    .queued
                    .fetch_sub(size.min(self.conn.info.queued.load(Ordering::Relaxed)), Ordering::Relaxed);
                match pattern {
                    Some(p) => {
                        out.push(4);
                        out.bulk(b"pmessage");
                        out.bulk(&p);
                    }
                    None => {
                        out.push(3);
                        out.bulk(b"message");
                    }
                }
                out.bulk(&channel);
                out.bulk(&payload);
                true
            }
            Push::Monitor(line) => {
                self.conn
                    .info
                    .queued
                    .fetch_sub(line.len().min(self.conn.info.queued.load(Ordering::Relaxed)), Ordering::Relaxed);
                out.simple_bytes(&line);
                true
            }
            Push::Served(bytes) => {
                out.raw(&bytes);
                true
            }
            Push::Kill => false,
            Push::Wake | Push::UnblockError => true,
        }
    }

    /// A script has run past `lua-time-limit` and holds the keyspace: answer buffered
    /// requests without it, as Redis does from inside the script's hook. SCRIPT KILL stops
    /// a script that has not written; everything else gets `-BUSY`.
    fn busy_batch(&mut self, decoder: &mut RequestDecoder, out: &mut ReplyBuf, first: Option<Vec<Bytes>>) -> Flow {
        let dog = &self.shared.script_dog;
        let mut next = first;
        loop {
            let argv = match next.take() {
                Some(a) => a,
                None => match decoder.decode(&mut self.rbuf, !self.conn.authenticated) {
                    Ok(Some(a)) => a,
                    Ok(None) => break,
                    Err(e) => {
                        self.protocol_error(e, out);
                        break;
                    }
                },
            };
            let two = |a: &str, b: &str| {
                argv.len() == 2
                    && argv[0].eq_ignore_ascii_case(a.as_bytes())
                    && argv[1].eq_ignore_ascii_case(b.as_bytes())
            };
            let (script_kill, function_kill) = (two("script", "kill"), two("function", "kill"));
            if two("function", "stats") {
                cmd::functions::stats_while_busy(&self.shared, out);
            } else if !script_kill && !function_kill {
                out.error(dog.busy_error());
            } else if dog.state.load(Ordering::Acquire) == 2 {
                out.error("UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.");
            } else if script_kill == dog.function.load(Ordering::Acquire) {
                // SCRIPT KILL stops EVAL scripts only, FUNCTION KILL functions only.
                out.error(dog.busy_error());
            } else {
                dog.kill.store(true, Ordering::Release);
                out.ok();
            }
        }
        Flow::Continue
    }

    /// Decodes and runs buffered requests under one lock acquisition.
    fn run_batch(&mut self, decoder: &mut RequestDecoder, out: &mut ReplyBuf, first: Option<Vec<Bytes>>) -> Flow {
        if self.rbuf.is_empty() && first.is_none() {
            return Flow::Continue;
        }
        let shared = self.shared.clone();
        let mut st = match shared.state.try_lock() {
            Some(g) => g,
            None => match shared.lock_unless_busy() {
                Some(g) => g,
                None => return self.busy_batch(decoder, out, first),
            },
        };
        // One clock read per batch: every command of a pipelined batch runs at the same
        // operation time (reading the clock per command cost ~5% at pipeline 16).
        self.batch_now = now_ms();
        let recorded_before = st.ks.effects.as_ref().map_or(0, |fx| fx.len());
        let mut next = first;
        let mut flow = Flow::Continue;
        loop {
            let argv = match next.take() {
                Some(a) => a,
                None => {
                    if self.conn.close {
                        break;
                    }
                    match decoder.decode(&mut self.rbuf, !self.conn.authenticated) {
                        Ok(Some(a)) => a,
                        Ok(None) => break,
                        Err(e) => {
                            self.protocol_error(e, out);
                            break;
                        }
                    }
                }
            };
            match self.process(&shared, &mut st, argv, out) {
                Flow::Continue => {}
                f => {
                    flow = f;
                    break;
                }
            }
        }
        let repl = shared.repl.get();
        let mut wake = false;
        if let Some(repl) = repl {
            wake = st.ks.effects.as_ref().is_some_and(|fx| !fx.is_empty());
            // Replies that show data wait for what they could have seen to commit; a batch
            // of only INFO, PING, CLIENT, RAFT INFO and the like answers at once (so an
            // operator can look at a leader that cannot commit).
            let recorded = st.ks.effects.as_ref().map_or(0, |fx| fx.len()) != recorded_before;
            if std::mem::take(&mut self.batch_touched) || recorded {
                self.ticket = repl.ticket(&st);
            }
            // This batch's ops go into a log entry only after the batch (and every read in it
            // or before it) has run: the proposer takes them once the lock is released.
            self.wrote_since_reads |= recorded;
        }
        let events = std::mem::take(&mut st.ks.events);
        drop(st);
        if wake {
            repl.expect("durable").wake_proposer();
        }
        if !events.is_empty() {
            let flags = shared.config.read().notify_keyspace_events;
            shared.publish_events(events, flags);
        }
        flow
    }

    /// Output produced by other connections can show any op recorded so far.
    fn ticket_from_others(&mut self) {
        if let Some(repl) = self.shared.repl.get() {
            let t = repl.current_ticket();
            if t.epoch != self.ticket.epoch || t.seq > self.ticket.seq {
                self.ticket = t;
            }
        }
    }

    /// Durable mode: waits until everything the pending replies depend on is in the log.
    /// False if it never will be (leadership lost), and the connection must close: the
    /// client cannot be told whether its writes happened.
    async fn await_commit(&mut self) -> bool {
        let Some(repl) = self.shared.repl.get() else { return true };
        let ticket = std::mem::take(&mut self.ticket);
        let reads = std::mem::take(&mut self.read_barrier);
        let wrote = std::mem::take(&mut self.wrote_since_reads);
        if repl.ack_on_execute.load(Ordering::Relaxed) {
            return true;
        }
        let rx = self.commit_rx.get_or_insert_with(|| repl.subscribe());
        let committed = {
            let c = rx.borrow();
            c.epoch == ticket.epoch && c.seq >= ticket.seq
        };
        // Bounded: a leader cut off from its majority cannot commit; after the bound the
        // connection closes (the client retries elsewhere) instead of hanging.
        if !committed {
            match tokio::time::timeout(crate::replication::COMMIT_TIMEOUT, Replicator::wait_committed(rx, ticket)).await
            {
                Ok(true) => {}
                Ok(false) => return false,
                Err(_) => {
                    tracing::warn!(
                        client = self.conn.id,
                        "write not committed within the bound; closing the connection"
                    );
                    return false;
                }
            }
        }
        // Reads need proof that no newer leader had written before they ran. A majority
        // of this term acknowledging an entry appended after them is that proof (any newer
        // leader needs votes from a majority, and a voter that had voted for it would have
        // refused the entry), so a batch whose own writes just committed skips the separate
        // heartbeat round; a batch of only reads pays for one (batched across connections).
        !reads || (wrote && ticket.seq > 0) || repl.confirm_leadership().await
    }

    fn protocol_error(&mut self, e: ProtocolError, out: &mut ReplyBuf) {
        match &e {
            ProtocolError::QueryBufferLimit(_) => {
                self.shared.counters.client_query_buffer_limit_disconnections.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(client = self.conn.id, "closing client that reached max query buffer length");
            }
            ProtocolError::Malformed(_) => tracing::debug!(error = %e, "protocol error"),
        }
        if let Some(text) = e.reply_text() {
            out.error(&text);
        }
        self.conn.close = true;
    }

    /// Redis's processCommand: checks, queueing, then the call.
    fn process(&mut self, shared: &Arc<Shared>, st: &mut State, argv: Vec<Bytes>, out: &mut ReplyBuf) -> Flow {
        let spec = cmd::lookup(&argv[0]);
        let mark = out.len();
        let mode_before = self.conn.reply_mode;
        if mode_before == ReplyMode::Skip {
            // This command consumes the pending skip (it may set a new one itself).
            self.conn.reply_mode = ReplyMode::On;
        }
        let flow = match self.check(st, spec, &argv) {
            Err(e) => {
                if self.conn.multi.is_some() {
                    self.conn.multi_error = true;
                }
                if let Some(s) = spec {
                    stat(&shared, s).rejected.fetch_add(1, Ordering::Relaxed);
                }
                reply_error(&shared, out, &e);
                Flow::Continue
            }
            Ok(Some(Queued)) => {
                self.conn.multi.as_mut().expect("in multi").push(argv);
                out.simple("QUEUED");
                Flow::Continue
            }
            Ok(None) => {
                let spec = spec.expect("checked");
                // WAIT in a cluster counts replicas as they catch up: answered asynchronously,
                // by the leader (a follower's writes went there: it forwards WAIT too).
                if spec.name == "wait" && self.conn.multi.is_none() && shared.repl.get().is_some_and(|r| r.clustered) {
                    return if st.repl.leader_epoch != 0 { Flow::Admin(argv) } else { Flow::Forward(argv) };
                }
                if spec.name == "raft"
                    && argv.get(1).is_some_and(|s| {
                        ["add-learner", "promote", "remove", "transfer-leader"]
                            .iter()
                            .any(|n| s.eq_ignore_ascii_case(n.as_bytes()))
                    })
                {
                    return Flow::Admin(argv);
                }
                if self.paused_for(spec) {
                    self.conn.reply_mode = mode_before;
                    return Flow::Paused(argv);
                }
                // A follower of a cluster runs no write itself: the leader does (and its log
                // brings the result here).
                if st.repl.leader_epoch == 0 && shared.repl.get().is_some_and(|r| r.clustered) {
                    // Reads go to the leader too (linearizable), unless READONLY asked for
                    // the local, possibly stale, state.
                    let read = spec.flags & flags::READONLY != 0;
                    // EVAL, EVALSHA and FCALL may write: the leader runs them. So do the
                    // writing subcommands of a container (FUNCTION LOAD, ...), and PUBLISH,
                    // which reaches every member through the log.
                    let script = matches!(spec.name, "eval" | "evalsha" | "fcall" | "publish");
                    let sub_write = !spec.subcommands.is_empty()
                        && argv.get(1).and_then(|s| cmd::lookup_sub(spec, s)).is_some_and(|s| s.is_write());
                    if spec.is_write() || script || sub_write || (read && !self.conn.stale_reads) {
                        return Flow::Forward(argv);
                    }
                    if spec.name == "exec"
                        && self
                            .conn
                            .multi
                            .as_ref()
                            .is_some_and(|q| q.iter().any(|a| cmd::lookup(&a[0]).is_some_and(|s| s.is_write())))
                    {
                        // A transaction that writes runs on the leader, whole: the queue goes
                        // there as one forwarded write.
                        let queue = self.conn.multi.take().unwrap_or_default();
                        let aborted = std::mem::take(&mut self.conn.multi_error);
                        let watched = !self.conn.watched.is_empty();
                        self.conn.info.in_multi.store(false, Ordering::Relaxed);
                        self.conn.unwatch(&mut st.ks);
                        if aborted {
                            out.error("EXECABORT Transaction discarded because of previous errors.");
                            return Flow::Continue;
                        }
                        if watched {
                            // This node's view of the watched keys trails the leader's: it
                            // cannot vouch that they are unchanged where the writes run.
                            out.error("ERR WATCH with a transaction that writes is not supported on a follower; send it to the leader");
                            return Flow::Continue;
                        }
                        return Flow::Forward(cmd::tx::encode_forwarded(&queue));
                    }
                }
                let shown = match (spec.subcommands.is_empty(), argv.get(1)) {
                    (false, Some(sub)) => cmd::lookup_sub(spec, sub).unwrap_or(spec),
                    _ => spec,
                };
                self.conn.info.last_cmd.store(cmd::spec_id(shown) as u32, Ordering::Relaxed);
                // (Decided once per batch: later commands skip the test.)
                if !self.batch_touched
                    && (shown.flags & (flags::READONLY | flags::WRITE) != 0
                        || matches!(spec.name, "eval" | "evalsha" | "fcall" | "exec" | "publish"))
                {
                    self.batch_touched = true;
                }
                if spec.flags & flags::READONLY != 0 && st.repl.leader_epoch != 0 {
                    self.read_barrier = true;
                }
                st.ks.now_ms = self.batch_now;
                let mut ctx = Ctx {
                    ks: &mut st.ks,
                    srv: &shared,
                    out,
                    db: self.conn.db,
                    client_id: self.conn.id,
                    conn: Some(&mut self.conn),
                    block_mode: BlockMode::Allowed,
                    block: None,
                    in_multi: false,
                };
                let block = call(&mut ctx, spec, &argv);
                let db = ctx.db;
                self.conn.db = db;
                // Like Redis, MONITOR sees a command after it ran (SELECT shows the new db);
                // admin commands and AUTH-like ones are hidden.
                let hidden = (spec.flags | shown.flags) & (flags::SKIP_MONITOR | flags::ADMIN) != 0;
                if shared.monitor_count.load(Ordering::Relaxed) > 0 && !hidden {
                    feed_monitors(&shared, self.conn.db, &self.conn.info, &argv);
                }
                match block {
                    Some(req) => Flow::Block(req, argv),
                    None => {
                        if !st.ks.ready.is_empty() {
                            serve_ready(&shared, st);
                        }
                        Flow::Continue
                    }
                }
            }
        };
        // CLIENT REPLY: OFF swallows every reply; SKIP swallows the reply of the command
        // *after* CLIENT REPLY SKIP (CLIENT REPLY ON itself replies).
        if mode_before == ReplyMode::Skip || self.conn.reply_mode == ReplyMode::Off {
            out.truncate(mark);
        }
        flow
    }

    /// Everything that can refuse or queue a command before it runs. Ok(Some) = queue it.
    fn check(
        &mut self,
        st: &mut State,
        spec: Option<&'static Spec>,
        argv: &[Bytes],
    ) -> Result<Option<Queued>, CmdError> {
        // Redis 7.0 reports unknown commands and bad arity even before authentication.
        let Some(spec) = spec else {
            return Err(CmdError::Owned(cmd::unknown_command_error(argv)));
        };
        // A container's subcommand has its own arity (CONFIG GET needs a pattern...).
        let arity_spec = match (spec.subcommands.is_empty(), argv.get(1)) {
            (false, Some(sub)) => cmd::lookup_sub(spec, sub).unwrap_or(spec),
            _ => spec,
        };
        if !spec.arity_ok(argv.len()) || !arity_spec.arity_ok(argv.len()) {
            return Err(err::wrong_args(arity_spec.name));
        }
        if !self.conn.authenticated && spec.flags & flags::NO_AUTH == 0 {
            return Err(CmdError::Static("NOAUTH Authentication required."));
        }
        if spec.flags & flags::LOADING == 0 && self.shared.loading.load(Ordering::Relaxed) {
            return Err(CmdError::Static("LOADING Redis is loading the dataset in memory"));
        }
        let in_multi = self.conn.multi.is_some();
        let tx_control = matches!(spec.name, "exec" | "discard" | "multi" | "watch" | "quit" | "reset");
        // Over maxmemory, Redis refuses commands that may grow memory, and inside MULTI it
        // refuses to queue anything at all (EXEC then aborts).
        if spec.flags & flags::DENYOOM != 0 || (in_multi && !tx_control) {
            oom_check(&self.shared, &mut st.ks)?;
        }
        if in_multi && !tx_control {
            if spec.flags & flags::NO_MULTI != 0 {
                return Err(CmdError::Static("ERR Command not allowed inside a transaction"));
            }
            return Ok(Some(Queued));
        }
        if self.conn.in_subscribe_mode()
            && !self.conn.resp3
            && !matches!(
                spec.name,
                "subscribe"
                    | "ssubscribe"
                    | "unsubscribe"
                    | "sunsubscribe"
                    | "psubscribe"
                    | "punsubscribe"
                    | "ping"
                    | "quit"
                    | "reset"
            )
        {
            return Err(CmdError::Owned(format!(
                "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                spec.name
            )));
        }
        Ok(None)
    }

    fn paused_for(&self, spec: &Spec) -> bool {
        if (spec.is_write() || spec.name == "exec")
            && (self.shared.write_hold.load(Ordering::Acquire)
                || self.shared.repl.get().is_some_and(|r| r.backlog_full()))
        {
            return true;
        }
        if !self.shared.pause_set.load(Ordering::Relaxed) {
            return false;
        }
        let p = *self.shared.pause.lock();
        if p.until_ms == 0 || now_ms() >= p.until_ms {
            return false;
        }
        if p.write_only {
            spec.is_write() || matches!(spec.name, "eval" | "evalsha" | "fcall" | "publish" | "pfcount" | "exec")
        } else {
            !matches!(spec.name, "client")
        }
    }

    async fn wait_unpaused(&mut self) {
        // A leader with too many writes waiting for their commit: wait for the log to catch
        // up (or for the leadership to end, which resets the count).
        while self.shared.repl.get().is_some_and(|r| r.backlog_full()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while self.shared.write_hold.load(Ordering::Acquire) {
            let notified = self.shared.unpaused.notified();
            if !self.shared.write_hold.load(Ordering::Acquire) {
                break;
            }
            // A bounded wait: the hold is released with a notify_waiters, which a waiter
            // registering just after would miss.
            let _ = tokio::time::timeout(Duration::from_millis(10), notified).await;
        }
        loop {
            let until = self.shared.pause.lock().until_ms;
            let now = now_ms();
            if until == 0 || now >= until {
                return;
            }
            let notified = self.shared.unpaused.notified();
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis((until - now) as u64)) => {}
            }
        }
    }

    /// Parks the connection on a blocking command. Returns false if the client went away.
    async fn wait_blocked(&mut self, req: BlockRequest, argv: Vec<Bytes>, out: &mut ReplyBuf) -> std::io::Result<bool> {
        let id = self.conn.id;
        {
            let mut st = self.shared.state.lock();
            for k in &req.keys {
                st.ks.blocking_keys.entry((self.conn.db, Blob::new(k))).or_default().push_back(id);
            }
            st.waiters.insert(
                id,
                Waiter {
                    client_id: id,
                    db: self.conn.db,
                    argv,
                    resp3: self.conn.resp3,
                    keys: req.keys.clone(),
                    tx: self.conn.info.tx.clone(),
                },
            );
        }
        self.conn.info.blocked.store(true, Ordering::Relaxed);
        self.shared.blocked_clients.fetch_add(1, Ordering::Relaxed);
        let result = self.block_loop(req.deadline_ms, out).await;
        self.unblocked();
        // Unregister if still waiting (timeout, error, disconnect).
        let was_waiting = remove_waiter(&mut self.shared.state.lock(), id);
        match result {
            Ok(BlockEnd::Served) => Ok(true),
            Ok(BlockEnd::Timeout) if was_waiting => {
                out.null_array();
                self.ticket_from_others();
                if !self.await_commit().await {
                    return Ok(false);
                }
                self.stream.write_all(&out.buf).await?;
                out.buf.clear();
                Ok(true)
            }
            Ok(BlockEnd::Error) if was_waiting => {
                out.error("UNBLOCKED client unblocked via CLIENT UNBLOCK");
                self.ticket_from_others();
                if !self.await_commit().await {
                    return Ok(false);
                }
                self.stream.write_all(&out.buf).await?;
                out.buf.clear();
                Ok(true)
            }
            Ok(BlockEnd::Timeout | BlockEnd::Error) => {
                // Served concurrently with the timeout: deliver the served reply.
                while let Ok(p) = self.rx.try_recv() {
                    if let Push::Served(b) = p {
                        self.ticket_from_others();
                        if !self.await_commit().await {
                            return Ok(false);
                        }
                        self.stream.write_all(&b).await?;
                        break;
                    }
                }
                Ok(true)
            }
            Ok(BlockEnd::Closed) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Marks the connection as no longer blocked (once per block).
    fn unblocked(&mut self) {
        if self.conn.info.blocked.swap(false, Ordering::Relaxed) {
            self.shared.blocked_clients.fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn block_loop(&mut self, deadline_ms: i64, out: &mut ReplyBuf) -> std::io::Result<BlockEnd> {
        loop {
            let sleep = if deadline_ms > 0 {
                Duration::from_millis((deadline_ms - now_ms()).max(0) as u64)
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                p = self.rx.recv() => match p {
                    Some(Push::Served(bytes)) => {
                        // No longer blocked before the client can see the reply: a client
                        // that reads it and then checks INFO's blocked_clients must not
                        // count this connection any more.
                        self.unblocked();
                        self.ticket_from_others();
                        if !self.await_commit().await {
                            return Ok(BlockEnd::Closed);
                        }
                        self.stream.write_all(&bytes).await?;
                        return Ok(BlockEnd::Served);
                    }
                    Some(Push::Wake) => return Ok(BlockEnd::Timeout),
                    Some(Push::UnblockError) => return Ok(BlockEnd::Error),
                    Some(Push::Kill) | None => return Ok(BlockEnd::Closed),
                    Some(other) => {
                        if !self.handle_push(other, out) {
                            return Ok(BlockEnd::Closed);
                        }
                    }
                },
                r = self.stream.read_buf(&mut self.rbuf) => {
                    // Redis keeps reading (and buffering) while a client is blocked; it only
                    // notices a disconnect.
                    if r? == 0 {
                        return Ok(BlockEnd::Closed);
                    }
                    if self.rbuf.len() > 1 << 30 {
                        return Ok(BlockEnd::Closed);
                    }
                }
                _ = tokio::time::sleep(sleep) => {
                    if deadline_ms > 0 && now_ms() >= deadline_ms {
                        return Ok(BlockEnd::Timeout);
                    }
                }
            }
        }
    }

    async fn cleanup(&mut self) {
        let id = self.conn.id;
        {
            // A long script may hold the keyspace: wait for it without blocking the
            // worker thread (other clients must still get -BUSY, and SCRIPT KILL through).
            let mut st = loop {
                if let Some(g) = self.shared.state.try_lock() {
                    break g;
                }
                if self.shared.script_dog.busy.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                } else if let Some(g) = self.shared.state.try_lock_for(Duration::from_millis(5)) {
                    break g;
                }
            };
            remove_waiter(&mut st, id);
            self.conn.unwatch(&mut st.ks);
        }
        for ch in self.conn.subs.drain() {
            if let Some(mut subs) = self.shared.pubsub.channels.get_mut(&ch) {
                subs.remove(&id);
                let empty = subs.is_empty();
                drop(subs);
                if empty {
                    self.shared.pubsub.channels.remove_if(&ch, |_, v| v.is_empty());
                }
            }
        }
        if !self.conn.psubs.is_empty() {
            self.shared.pubsub.patterns.write().retain(|(_, c)| c.id != id);
        }
        if self.shared.monitors.remove(&id).is_some() {
            self.shared.monitor_count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

struct Queued;

enum BlockEnd {
    Served,
    Timeout,
    Error,
    Closed,
}

/// Runs a command (already checked) and records its statistics. Returns a block request
/// when the command has to wait.
pub fn call(ctx: &mut Ctx, spec: &'static Spec, argv: &[Bytes]) -> Option<BlockRequest> {
    let start = crate::clock::Ticks::now();
    let mark = ctx.out.len();
    let res = (spec.handler)(ctx, argv);
    let ticks = start.elapsed();
    let usec = crate::clock::ticks_to_us(ticks);
    let failed = res.is_err();
    if let Err(e) = res {
        ctx.out.truncate(mark);
        reply_error(ctx.srv, ctx.out, &e);
    }
    let s = stat(ctx.srv, spec);
    s.calls.fetch_add(1, Ordering::Relaxed);
    s.ticks.fetch_add(ticks, Ordering::Relaxed);
    if failed {
        s.failed.fetch_add(1, Ordering::Relaxed);
    }
    ctx.srv.counters.total_commands_processed.fetch_add(1, Ordering::Relaxed);
    let slower = ctx.srv.slowlog_threshold.load(Ordering::Relaxed);
    if slower >= 0 && usec >= slower as u64 && spec.flags & flags::SKIP_SLOWLOG == 0 {
        crate::cmd::introspect::slowlog_push(ctx, argv, usec);
    }
    ctx.block.take()
}

fn stat<'a>(shared: &'a Shared, spec: &'static Spec) -> &'a crate::shared::CmdStat {
    &shared.cmdstats[cmd::spec_id(spec)]
}

/// Writes an error reply and counts it in INFO errorstats.
pub fn reply_error(shared: &Shared, out: &mut ReplyBuf, e: &CmdError) {
    let text = e.text();
    out.error(text);
    shared.counters.total_error_replies.fetch_add(1, Ordering::Relaxed);
    let code = text.split(' ').next().unwrap_or("ERR").to_string();
    *shared.errorstats.lock().entry(code).or_default() += 1;
}

/// Evicts keys until under `maxmemory`, or fails with Redis's OOM error.
pub fn oom_check(shared: &Shared, ks: &mut Keyspace) -> Result<(), CmdError> {
    let (maxmemory, samples) = {
        let c = shared.config.read();
        (c.maxmemory, c.maxmemory_samples as usize)
    };
    // A replica does not evict on its own (its writes come from the leader's log).
    if maxmemory == 0 || ks.replica {
        return Ok(());
    }
    let mut guard = 0;
    // Freed slab slots are reused before anything new is allocated, so they count as free.
    while crate::memory::used_memory().saturating_sub(ks.reusable_bytes()) > maxmemory {
        if !ks.evict_one(samples.max(1)) {
            return Err(CmdError::Static("OOM command not allowed when used memory > 'maxmemory'."));
        }
        guard += 1;
        if guard % 64 == 0 && guard > 100_000 {
            return Err(CmdError::Static("OOM command not allowed when used memory > 'maxmemory'."));
        }
    }
    Ok(())
}

/// Serves clients blocked on keys that just received data, in the order they blocked, by
/// re-running their command on their behalf (Redis's `handleClientsBlockedOnKeys`).
pub fn serve_ready(shared: &Shared, st: &mut State) {
    let mut guard = 0usize;
    while let Some((db, key)) = st.ks.ready.pop() {
        guard += 1;
        if guard > 1_000_000 {
            break;
        }
        let ids: Vec<u64> = match st.ks.blocking_keys.get(&(db, Blob::new(&key))) {
            Some(q) => q.iter().copied().collect(),
            None => continue,
        };
        for wid in ids {
            if !st.ks.exists_logically(db, &key) {
                break;
            }
            let Some(w) = st.waiters.get(&wid) else { continue };
            let Some(spec) = cmd::lookup(&w.argv[0]) else { continue };
            let argv = w.argv.clone();
            let wdb = w.db;
            let resp3 = w.resp3;
            let mut out = ReplyBuf::new(resp3);
            let mut ctx = Ctx {
                ks: &mut st.ks,
                srv: shared,
                out: &mut out,
                db: wdb,
                client_id: wid,
                conn: None,
                block_mode: BlockMode::Serving,
                block: None,
                in_multi: false,
            };
            if call(&mut ctx, spec, &argv).is_some() {
                continue; // still nothing for it (e.g. BLMPOP on another key)
            }
            let w = st.waiters.get(&wid).expect("present");
            let _ = w.tx.send(Push::Served(out.buf.freeze()));
            remove_waiter(st, wid);
        }
    }
}

/// Unregisters a waiter from every key it blocks on; returns true if it was registered.
pub fn remove_waiter(st: &mut State, id: u64) -> bool {
    let Some(w) = st.waiters.remove(&id) else { return false };
    for k in &w.keys {
        let key = (w.db, Blob::new(k));
        if let Some(q) = st.ks.blocking_keys.get_mut(&key) {
            q.retain(|&i| i != id);
            if q.is_empty() {
                st.ks.blocking_keys.remove(&key);
            }
        }
    }
    true
}

/// Sends a command line to every MONITOR client.
fn feed_monitors(shared: &Shared, db: usize, info: &ClientInfo, argv: &[Bytes]) {
    let now = crate::keyspace::now_us();
    let mut line = format!("{}.{:06} [{} {}]", now / 1_000_000, now % 1_000_000, db, info.addr);
    for a in argv {
        line.push_str(" \"");
        for &c in a.iter() {
            match c {
                b'"' => line.push_str("\\\""),
                b'\\' => line.push_str("\\\\"),
                b'\n' => line.push_str("\\n"),
                b'\r' => line.push_str("\\r"),
                b'\t' => line.push_str("\\t"),
                0x07 => line.push_str("\\a"),
                0x08 => line.push_str("\\b"),
                c if c.is_ascii_graphic() || c == b' ' => line.push(c as char),
                c => line.push_str(&format!("\\x{c:02x}")),
            }
        }
        line.push('"');
    }
    let limits = shared.config.read().normal_limit;
    let bytes = Bytes::from(line);
    for m in shared.monitors.iter() {
        let _ = m.push(Push::Monitor(bytes.clone()), bytes.len(), limits);
    }
}
