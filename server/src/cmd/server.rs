//! Server commands: INFO CONFIG TIME LASTSAVE MONITOR LATENCY WAIT ROLE SHUTDOWN DEBUG,
//! and FUNCTION/SCRIPT FLUSH (accepted until scripting exists).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::args::{self, glob_match, is};
use super::flags::*;
use super::keys::help;
use super::{err, CmdError, CmdResult, Ctx, Spec};
use crate::config;
use crate::memory;

/// The Redis version redoubt reports: clients gate features on it.
pub const REDIS_VERSION: &str = "7.2.4";

pub const COMMANDS: &[Spec] = &[
    Spec::new("info", -1, LOADING | STALE, (0, 0, 0), "server", info).acl(&["@dangerous"]),
    Spec::new("config", -2, 0, (0, 0, 0), "server", config_cmd).with_subcommands(&[
        Spec::new("config|get", -3, ADMIN | NOSCRIPT | LOADING | STALE, (0, 0, 0), "server", super::container_only),
        Spec::new("config|set", -4, ADMIN | NOSCRIPT | LOADING | STALE, (0, 0, 0), "server", super::container_only),
        Spec::new(
            "config|resetstat",
            2,
            ADMIN | NOSCRIPT | LOADING | STALE,
            (0, 0, 0),
            "server",
            super::container_only,
        ),
        Spec::new("config|rewrite", 2, ADMIN | NOSCRIPT | LOADING | STALE, (0, 0, 0), "server", super::container_only),
        Spec::new("config|help", 2, LOADING | STALE, (0, 0, 0), "server", super::container_only),
    ]),
    Spec::new("time", 1, LOADING | STALE | FAST, (0, 0, 0), "server", time),
    Spec::new("lastsave", 1, LOADING | STALE | FAST, (0, 0, 0), "server", lastsave).acl(&["@admin", "@dangerous"]),
    Spec::new("monitor", 1, ADMIN | NOSCRIPT | LOADING | STALE, (0, 0, 0), "server", monitor),
    Spec::new("latency", -2, 0, (0, 0, 0), "server", latency).with_subcommands(&[
        Spec::new("latency|doctor", 2, ADMIN | NOSCRIPT | LOADING | STALE, (0, 0, 0), "server", super::container_only),
        Spec::new("latency|latest", 2, ADMIN | NOSCRIPT | LOADING | STALE, (0, 0, 0), "server", super::container_only),
        Spec::new("latency|reset", -2, ADMIN | NOSCRIPT | LOADING | STALE, (0, 0, 0), "server", super::container_only),
        Spec::new("latency|history", 3, ADMIN | NOSCRIPT | LOADING | STALE, (0, 0, 0), "server", super::container_only),
        Spec::new("latency|help", 2, LOADING | STALE, (0, 0, 0), "server", super::container_only),
    ]),
    Spec::new("wait", 3, NOSCRIPT, (0, 0, 0), "connection", wait),
    Spec::new("role", 1, NOSCRIPT | LOADING | STALE | FAST, (0, 0, 0), "admin", role).acl(&["@admin", "@dangerous"]),
    Spec::new(
        "shutdown",
        -1,
        ADMIN | NOSCRIPT | LOADING | STALE | NO_MULTI | ALLOW_BUSY,
        (0, 0, 0),
        "server",
        shutdown,
    ),
    Spec::new("debug", -2, ADMIN | NOSCRIPT | LOADING | STALE, (0, 0, 0), "server", debug),
];

const DEFAULT_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "errorstats",
    "cluster",
    "keyspace",
];
const ALL_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "commandstats",
    "errorstats",
    "cluster",
    "keyspace",
];

fn info(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let mut wanted: Vec<String> = argv[1..].iter().map(|a| args::s(a).to_ascii_lowercase()).collect();
    if wanted.is_empty() || wanted.iter().any(|w| w == "default") {
        wanted.extend(DEFAULT_SECTIONS.iter().map(|s| s.to_string()));
    }
    if wanted.iter().any(|w| w == "all" || w == "everything") {
        wanted.extend(ALL_SECTIONS.iter().map(|s| s.to_string()));
    }
    let mut text = String::new();
    for sec in ALL_SECTIONS {
        if !wanted.iter().any(|w| w == sec) {
            continue;
        }
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        info_section(ctx, sec, &mut text);
    }
    ctx.out.verbatim("txt", text.as_bytes());
    Ok(())
}

fn info_section(ctx: &mut Ctx, sec: &str, t: &mut String) {
    let srv = ctx.srv;
    let cfg = srv.config.read().clone();
    let uptime = srv.started.elapsed().as_secs();
    let _ = writeln!(t, "# {}{}\r", sec[..1].to_ascii_uppercase(), &sec[1..]);
    let mut kv = |k: &str, v: String| {
        let _ = write!(t, "{k}:{v}\r\n");
    };
    match sec {
        "server" => {
            kv("redis_version", REDIS_VERSION.into());
            kv("redoubt_version", env!("CARGO_PKG_VERSION").into());
            kv("redis_git_sha1", "00000000".into());
            kv("redis_git_dirty", "0".into());
            kv("redis_build_id", "0".into());
            kv("redis_mode", "standalone".into());
            kv("os", format!("{} {}", std::env::consts::OS, std::env::consts::ARCH));
            kv("arch_bits", "64".into());
            kv("multiplexing_api", "epoll".into());
            kv("atomicvar_api", "c11-builtin".into());
            kv("gcc_version", "0.0.0".into());
            kv("process_id", std::process::id().to_string());
            kv("process_supervised", "no".into());
            kv("run_id", srv.run_id.clone());
            kv("tcp_port", srv.port().to_string());
            kv("server_time_usec", crate::keyspace::now_us().to_string());
            kv("uptime_in_seconds", uptime.to_string());
            kv("uptime_in_days", (uptime / 86400).to_string());
            kv("hz", cfg.hz.to_string());
            kv("configured_hz", cfg.hz.to_string());
            kv("lru_clock", (((ctx.ks.now_ms / 1000) as u32) & 0xFF_FFFF).to_string());
            kv("executable", std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default());
            kv("config_file", String::new());
            kv("io_threads_active", "0".into());
        }
        "clients" => {
            let clients = srv.clients.len();
            let pubsub = srv.clients.iter().filter(|c| c.is_pubsub.load(Ordering::Relaxed)).count();
            kv("connected_clients", clients.to_string());
            kv("cluster_connections", "0".into());
            kv("maxclients", cfg.maxclients.to_string());
            kv("client_recent_max_input_buffer", "0".into());
            kv("client_recent_max_output_buffer", "0".into());
            kv("blocked_clients", srv.blocked_clients.load(Ordering::Relaxed).to_string());
            kv("tracking_clients", "0".into());
            kv("pubsub_clients", pubsub.to_string());
            kv("clients_in_timeout_table", srv.blocked_clients.load(Ordering::Relaxed).to_string());
        }
        "memory" => {
            // Heap bytes in use, not counting freed keyspace slots kept for reuse.
            let used = memory::used_memory().saturating_sub(ctx.ks.reusable_bytes());
            let rss = memory::rss();
            let peak = memory::peak_memory();
            let dataset = ctx.ks.data_bytes() as u64;
            kv("used_memory", used.to_string());
            kv("used_memory_human", memory::human(used));
            kv("used_memory_rss", rss.to_string());
            kv("used_memory_rss_human", memory::human(rss));
            kv("used_memory_peak", peak.to_string());
            kv("used_memory_peak_human", memory::human(peak));
            kv(
                "used_memory_peak_perc",
                format!("{:.2}%", if peak > 0 { used as f64 * 100.0 / peak as f64 } else { 100.0 }),
            );
            kv("used_memory_overhead", used.saturating_sub(dataset).to_string());
            kv("used_memory_startup", "0".into());
            kv("used_memory_dataset", dataset.to_string());
            let sys = memory::total_system_memory();
            kv("total_system_memory", sys.to_string());
            kv("total_system_memory_human", memory::human(sys));
            kv("maxmemory", cfg.maxmemory.to_string());
            kv("maxmemory_human", memory::human(cfg.maxmemory));
            kv("maxmemory_policy", cfg.maxmemory_policy.name().into());
            kv("mem_fragmentation_ratio", format!("{:.2}", if used > 0 { rss as f64 / used as f64 } else { 0.0 }));
            kv("mem_allocator", "libc".into());
            kv("lazyfree_pending_objects", "0".into());
        }
        "persistence" => {
            kv("loading", (srv.loading.load(Ordering::Relaxed) as u8).to_string());
            kv("async_loading", "0".into());
            kv("current_cow_peak", "0".into());
            kv("rdb_changes_since_last_save", ctx.ks.dirty.to_string());
            kv("rdb_bgsave_in_progress", "0".into());
            kv("rdb_last_save_time", srv.lastsave.load(Ordering::Relaxed).to_string());
            kv("rdb_last_bgsave_status", "ok".into());
            kv("aof_enabled", "0".into());
            kv("durability", srv.config.read().durability.name().into());
            kv("aof_rewrite_in_progress", "0".into());
            kv("aof_last_write_status", "ok".into());
            kv("durability", "none".into());
        }
        "stats" => {
            let c = &srv.counters;
            let ops = {
                let s = srv.ops_samples.lock();
                if s.2.is_empty() {
                    0.0
                } else {
                    s.2.iter().sum::<f64>() / s.2.len() as f64
                }
            };
            kv("total_connections_received", c.total_connections_received.load(Ordering::Relaxed).to_string());
            kv("total_commands_processed", c.total_commands_processed.load(Ordering::Relaxed).to_string());
            kv("instantaneous_ops_per_sec", (ops.round() as u64).to_string());
            kv("total_net_input_bytes", c.net_input_bytes.load(Ordering::Relaxed).to_string());
            kv("total_net_output_bytes", c.net_output_bytes.load(Ordering::Relaxed).to_string());
            kv("rejected_connections", c.rejected_connections.load(Ordering::Relaxed).to_string());
            kv("expired_keys", ctx.ks.stats.expired_keys.to_string());
            kv("evicted_keys", ctx.ks.stats.evicted_keys.to_string());
            kv("evicted_clients", "0".into());
            kv("keyspace_hits", ctx.ks.stats.keyspace_hits.to_string());
            kv("keyspace_misses", ctx.ks.stats.keyspace_misses.to_string());
            kv("pubsub_channels", srv.pubsub.channels.len().to_string());
            kv("pubsub_patterns", srv.pubsub.patterns.read().len().to_string());
            kv("total_error_replies", c.total_error_replies.load(Ordering::Relaxed).to_string());
            kv(
                "client_query_buffer_limit_disconnections",
                c.client_query_buffer_limit_disconnections.load(Ordering::Relaxed).to_string(),
            );
            kv(
                "client_output_buffer_limit_disconnections",
                c.client_output_buffer_limit_disconnections.load(Ordering::Relaxed).to_string(),
            );
        }
        "replication" => {
            // A cluster follower reports itself as a replica of the leader, as Redis does.
            let follower = srv.repl.get().filter(|r| r.clustered && !r.raft.metrics().borrow().state.is_leader());
            if let Some(repl) = follower {
                let leader = repl.leader_client_addr.lock().clone();
                let (host, port) = leader
                    .as_ref()
                    .and_then(|(_, a)| a.rsplit_once(':'))
                    .map_or((String::new(), String::from("0")), |(h, p)| (h.to_string(), p.to_string()));
                kv("role", "slave".into());
                kv("master_host", host);
                kv("master_port", port);
                kv("master_link_status", if leader.is_some() { "up" } else { "down" }.into());
                kv("connected_slaves", "0".into());
                kv("master_replid", srv.run_id.clone());
                kv("master_repl_offset", "0".into());
                return;
            }
            kv("role", "master".into());
            // A cluster leader lists its followers as Redis lists replicas: the offset is
            // the log index each holds, the lag how far behind the leader's log it is.
            let leader = srv.repl.get().filter(|r| r.clustered).map(|r| r.raft.metrics().borrow().clone());
            let (offset, followers) = match &leader {
                Some(m) if m.state.is_leader() => {
                    let last = m.last_log_index.unwrap_or(0);
                    let nodes = m.membership_config.membership();
                    let list: Vec<(u64, String, u64)> = m
                        .replication
                        .as_ref()
                        .map(|r| {
                            r.iter()
                                .filter(|(id, _)| **id != m.id)
                                .map(|(id, l)| {
                                    let addr = nodes.get_node(id).map(|n| n.raft_addr.clone()).unwrap_or_default();
                                    (*id, addr, l.map_or(0, |l| l.index))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    (last, list)
                }
                _ => (0, Vec::new()),
            };
            kv("connected_slaves", followers.len().to_string());
            for (i, (id, addr, matched)) in followers.iter().enumerate() {
                let (ip, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "0"));
                kv(
                    &format!("slave{i}"),
                    format!(
                        "ip={ip},port={port},state=online,offset={matched},lag={},node_id={id}",
                        offset.saturating_sub(*matched)
                    ),
                );
            }
            kv("master_failover_state", "no-failover".into());
            kv("master_replid", srv.run_id.clone());
            kv("master_repl_offset", offset.to_string());
            kv("repl_backlog_active", "0".into());
        }
        "cpu" => {
            let (user, sys) = cpu_times();
            kv("used_cpu_sys", format!("{sys:.6}"));
            kv("used_cpu_user", format!("{user:.6}"));
            kv("used_cpu_sys_children", "0.000000".into());
            kv("used_cpu_user_children", "0.000000".into());
        }
        "modules" | "cluster" => {
            if sec == "cluster" {
                kv("cluster_enabled", "0".into());
            }
        }
        "commandstats" => {
            let mut stats: Vec<_> = crate::cmd::all_specs()
                .iter()
                .zip(srv.cmdstats.iter())
                .map(|(spec, s)| {
                    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
                    (
                        spec.name,
                        get(&s.calls),
                        crate::clock::ticks_to_us(get(&s.ticks)),
                        get(&s.rejected),
                        get(&s.failed),
                    )
                })
                .filter(|&(_, calls, _, rejected, failed)| calls + rejected + failed > 0)
                .collect();
            stats.sort_by_key(|s| s.0);
            for (name, calls, usec, rejected, failed) in stats {
                let per = if calls > 0 { usec as f64 / calls as f64 } else { 0.0 };
                kv(
                    &format!("cmdstat_{name}"),
                    format!(
                        "calls={calls},usec={usec},usec_per_call={per:.2},rejected_calls={rejected},failed_calls={failed}"
                    ),
                );
            }
        }
        "errorstats" => {
            let mut errs: Vec<_> = srv.errorstats.lock().iter().map(|(k, v)| (k.clone(), *v)).collect();
            errs.sort();
            for (code, n) in errs {
                kv(&format!("errorstat_{code}"), format!("count={n}"));
            }
        }
        "keyspace" => {
            for (i, d) in ctx.ks.dbs.iter().enumerate() {
                if !d.is_empty() {
                    kv(&format!("db{i}"), format!("keys={},expires={},avg_ttl=0", d.len(), d.expires));
                }
            }
        }
        _ => {}
    }
}

/// User and system CPU seconds of this process.
fn cpu_times() -> (f64, f64) {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is always valid.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return (0.0, 0.0);
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        (tv(u.ru_utime), tv(u.ru_stime))
    }
}

const CONFIG_HELP: &[&str] = &[
    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <pattern>",
    "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>",
    "    Set the configuration <directive> to <value>.",
    "RESETSTAT",
    "    Reset statistics reported by the INFO command.",
    "REWRITE",
    "    Rewrite the configuration file.",
    "HELP",
    "    Prints this help.",
];

fn config_cmd(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    let n = argv.len();
    if is(sub, "help") && n == 2 {
        help(ctx, CONFIG_HELP);
    } else if is(sub, "get") && n >= 3 {
        let cfg = ctx.srv.config.read().clone();
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for pat in &argv[2..] {
            for d in config::directives() {
                for name in std::iter::once(d.name).chain(d.alias) {
                    if glob_match(pat, name.as_bytes(), true) && !pairs.iter().any(|(k, _)| *k == name) {
                        pairs.push((name, (d.get)(&cfg)));
                    }
                }
            }
        }
        ctx.out.map(pairs.len());
        for (k, v) in pairs {
            ctx.out.bulk(k.as_bytes());
            ctx.out.bulk(v.as_bytes());
        }
    } else if is(sub, "set") && n >= 4 && n % 2 == 0 {
        config_set(ctx, &argv[2..])?;
        ctx.out.ok();
    } else if is(sub, "resetstat") && n == 2 {
        let srv = ctx.srv;
        srv.cmdstats.iter().for_each(crate::shared::CmdStat::reset);
        srv.errorstats.lock().clear();
        ctx.ks.stats = Default::default();
        for c in [
            &srv.counters.total_commands_processed,
            &srv.counters.total_connections_received,
            &srv.counters.rejected_connections,
            &srv.counters.net_input_bytes,
            &srv.counters.net_output_bytes,
            &srv.counters.total_error_replies,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        ctx.out.ok();
    } else if is(sub, "rewrite") && n == 2 {
        return Err(CmdError::Static("ERR The server is running without a config file"));
    } else {
        return Err(err::unknown_subcommand("config", sub));
    }
    Ok(())
}

/// CONFIG SET with one or more directive/value pairs, all-or-nothing as in Redis 7.
fn config_set(ctx: &mut Ctx, pairs: &[Bytes]) -> CmdResult {
    let mut next = ctx.srv.config.read().clone();
    let mut seen = Vec::new();
    for kv in pairs.chunks(2) {
        let name = args::s(&kv[0]);
        let d = config::find(&name).ok_or_else(|| {
            CmdError::Owned(format!("ERR Unknown option or number of arguments for CONFIG SET - '{name}'"))
        })?;
        if !d.mutable {
            return Err(CmdError::Owned(format!(
                "ERR CONFIG SET failed (possibly related to argument '{name}') - can't set immutable config"
            )));
        }
        if seen.contains(&d.name) {
            return Err(CmdError::Owned(format!(
                "ERR CONFIG SET failed (possibly related to argument '{name}') - duplicate parameter"
            )));
        }
        seen.push(d.name);
        (d.set)(&mut next, &args::s(&kv[1])).map_err(|e| {
            CmdError::Owned(format!("ERR CONFIG SET failed (possibly related to argument '{name}') - {e}"))
        })?;
    }
    let srv = ctx.srv;
    *srv.config.write() = next.clone();
    // The keyspace lock is held by this command: update its copies directly.
    ctx.ks.notify_flags = next.notify_keyspace_events;
    ctx.ks.policy = next.maxmemory_policy;
    ctx.ks.lfu_log_factor = next.lfu_log_factor;
    ctx.ks.lfu_decay_time = next.lfu_decay_time;
    srv.slowlog_threshold.store(next.slowlog_log_slower_than, Ordering::Relaxed);
    Ok(())
}

fn time(ctx: &mut Ctx, _argv: &[Bytes]) -> CmdResult {
    let us = crate::keyspace::now_us();
    ctx.out.array(2);
    ctx.out.bulk((us / 1_000_000).to_string().as_bytes());
    ctx.out.bulk((us % 1_000_000).to_string().as_bytes());
    Ok(())
}

fn lastsave(ctx: &mut Ctx, _argv: &[Bytes]) -> CmdResult {
    ctx.out.int(ctx.srv.lastsave.load(Ordering::Relaxed));
    Ok(())
}

fn monitor(ctx: &mut Ctx, _argv: &[Bytes]) -> CmdResult {
    if ctx.in_multi {
        return Err(CmdError::Static("ERR MONITOR isn't allowed inside a transaction"));
    }
    let srv = ctx.srv;
    let c = ctx.conn()?;
    if !c.monitor {
        c.monitor = true;
        c.info.is_monitor.store(true, Ordering::Relaxed);
        srv.monitors.insert(c.id, c.info.clone());
        srv.monitor_count.fetch_add(1, Ordering::Relaxed);
    }
    ctx.out.ok();
    Ok(())
}

const LATENCY_HELP: &[&str] = &[
    "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "DOCTOR",
    "    Return a human readable latency analysis report.",
    "GRAPH <event>",
    "    Return an ASCII latency graph for the <event> class.",
    "HISTORY <event>",
    "    Return time-latency samples for the <event> class.",
    "LATEST",
    "    Return the latest latency samples for all events.",
    "RESET [<event> ...]",
    "    Reset latency data of one or more <event> classes.",
    "    (default: reset all data for all event classes)",
    "HELP",
    "    Prints this help.",
];

fn latency(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    let n = argv.len();
    if is(sub, "help") && n == 2 {
        help(ctx, LATENCY_HELP);
    } else if is(sub, "doctor") && n == 2 {
        let threshold = ctx.srv.config.read().latency_monitor_threshold;
        let text = if threshold == 0 {
            "I'm sorry, Dave, I can't do that. Latency monitoring is disabled in this Redis instance. You may use \"CONFIG SET latency-monitor-threshold <milliseconds>.\" in order to enable it. If we weren't in a deep space mission I'd suggest to take a look at https://redis.io/topics/latency-monitor.\n"
        } else {
            "Dave, no latency spike was observed during the lifetime of this Redis instance, not in the slightest bit. I honestly think you ought to sleep better.\n"
        };
        ctx.out.verbatim("txt", text.as_bytes());
    } else if is(sub, "latest") && n == 2 {
        ctx.out.array(0);
    } else if is(sub, "history") && n == 3 {
        ctx.out.array(0);
    } else if is(sub, "reset") {
        ctx.out.int(0);
    } else {
        return Err(err::unknown_subcommand("latency", sub));
    }
    Ok(())
}

/// WAIT: a single node has no replicas to wait for. (In a cluster the connection answers
/// WAIT itself, asynchronously: `replication::cluster::wait_replicas`.)
fn wait(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    args::int(&argv[1])?;
    let t = args::int(&argv[2])?;
    if t < 0 {
        return Err(err::TIMEOUT_NEG);
    }
    ctx.out.int(0);
    Ok(())
}

fn role(ctx: &mut Ctx, _argv: &[Bytes]) -> CmdResult {
    ctx.out.array(3);
    ctx.out.bulk(b"master");
    ctx.out.int(0);
    ctx.out.array(0);
    Ok(())
}

fn shutdown(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    for a in &argv[1..] {
        if !["nosave", "save", "now", "force", "abort"].iter().any(|o| is(a, o)) {
            return Err(err::SYNTAX);
        }
    }
    if argv[1..].iter().any(|a| is(a, "abort")) {
        return Err(CmdError::Static("ERR No shutdown in progress."));
    }
    tracing::warn!("User requested shutdown...");
    ctx.srv.shutting_down.store(true, Ordering::Relaxed);
    ctx.srv.shutdown.notify_waiters();
    ctx.srv.shutdown.notify_one();
    if let Some(c) = ctx.conn.as_deref_mut() {
        c.close = true;
    }
    Ok(())
}

fn debug(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    if !ctx.srv.config.read().enable_debug_command {
        return Err(CmdError::Static("ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server."));
    }
    let sub = &argv[1];
    if is(sub, "sleep") && argv.len() == 3 {
        let secs = args::float(&argv[2])?;
        // Holds the keyspace lock on purpose: DEBUG SLEEP simulates a slow command.
        std::thread::sleep(std::time::Duration::from_secs_f64(secs.clamp(0.0, 60.0)));
        ctx.out.ok();
    } else if is(sub, "set-active-expire") && argv.len() == 3 {
        ctx.out.ok();
    } else if is(sub, "jmap") || is(sub, "quicklist-packed-threshold") {
        ctx.out.ok();
    } else {
        return Err(CmdError::Owned(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try DEBUG HELP.",
            args::s(sub)
        )));
    }
    Ok(())
}
