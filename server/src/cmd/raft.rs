//! RAFT: the replication state of this node (INFO, NODES) and its administration
//! (SNAPSHOT; membership changes come with clustering).

use std::fmt::Write;

use bytes::Bytes;

use super::args::is;
use super::flags::*;
use super::{CmdError, CmdResult, Ctx, Spec};

pub const COMMANDS: &[Spec] = &[Spec::new("raft", -2, ADMIN | LOADING | STALE, (0, 0, 0), "server", raft)
    .acl(&["@dangerous"])
    .with_subcommands(&[
        Spec::new("raft|info", 2, ADMIN | LOADING | STALE, (0, 0, 0), "server", super::container_only),
        Spec::new("raft|nodes", 2, ADMIN | LOADING | STALE, (0, 0, 0), "server", super::container_only),
        Spec::new("raft|snapshot", 2, ADMIN, (0, 0, 0), "server", super::container_only),
        Spec::new("raft|add-learner", 5, ADMIN, (0, 0, 0), "server", super::container_only),
        Spec::new("raft|promote", -3, ADMIN, (0, 0, 0), "server", super::container_only),
        Spec::new("raft|remove", 3, ADMIN, (0, 0, 0), "server", super::container_only),
        Spec::new("raft|transfer-leader", 3, ADMIN, (0, 0, 0), "server", super::container_only),
        Spec::new("raft|help", 2, LOADING | STALE, (0, 0, 0), "server", super::container_only),
    ])];

const NOT_DURABLE: CmdError = CmdError::Static("ERR RAFT is not available: this node runs with --durability none");

fn raft(ctx: &mut Ctx, argv: &[Bytes]) -> CmdResult {
    let sub = &argv[1];
    if is(sub, "help") {
        let lines = [
            "RAFT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "INFO",
            "    Replication state of this node as field:value lines.",
            "NODES",
            "    One line per member: id, client address, raft address, role, match index, lag.",
            "SNAPSHOT",
            "    Take a snapshot now and purge the log behind it.",
            "ADD-LEARNER <id> <raft-addr> <client-addr>",
            "    Add a node as a learner (on the leader); answers once it has caught up.",
            "PROMOTE <id> [<id> ...]",
            "    Make learners voters.",
            "REMOVE <id>",
            "    Remove a voter or a learner from the cluster.",
            "TRANSFER-LEADER <id>",
            "    Not available with openraft 0.9.",
            "HELP",
            "    Print this help.",
        ];
        ctx.out.array(lines.len());
        for l in lines {
            ctx.out.simple(l);
        }
        return Ok(());
    }
    let Some(repl) = ctx.srv.repl.get() else { return Err(NOT_DURABLE) };
    let m = repl.raft.metrics().borrow().clone();
    if is(sub, "info") {
        let mut s = String::new();
        let role = match m.state {
            openraft::ServerState::Leader => "leader",
            openraft::ServerState::Follower => "follower",
            openraft::ServerState::Learner => "learner",
            openraft::ServerState::Candidate => "candidate",
            openraft::ServerState::Shutdown => "shutdown",
        };
        let members = m.membership_config.membership();
        let voters: Vec<String> = members.voter_ids().map(|i| i.to_string()).collect();
        let learners: Vec<String> = members.learner_ids().map(|i| i.to_string()).collect();
        let leader_addr = m
            .current_leader
            .and_then(|l| members.get_node(&l))
            .map(|n| n.client_addr.clone())
            .filter(|a| !a.is_empty())
            .or_else(|| {
                let cached = repl.leader_client_addr.lock();
                cached.as_ref().filter(|(id, _)| Some(*id) == m.current_leader).map(|(_, a)| a.clone())
            })
            .unwrap_or_default();
        let idx = |l: Option<openraft::LogId<u64>>| l.map_or(0, |l| l.index);
        let _ = write!(
            s,
            "node_id:{}\r\nrole:{}\r\nleader_id:{}\r\nleader_addr:{}\r\nterm:{}\r\ncommit_index:{}\r\napplied_index:{}\r\nlast_log_index:{}\r\nsnapshot_index:{}\r\npurged_index:{}\r\nmembers:{}\r\nlearners:{}\r\nuncommitted_ops:{}\r\n",
            m.id,
            role,
            m.current_leader.map_or(String::new(), |l| l.to_string()),
            leader_addr,
            m.current_term,
            // Committed entries are applied in order; openraft 0.9's metrics expose the
            // applied index, which is what a client can observe.
            idx(m.last_applied),
            idx(m.last_applied),
            m.last_log_index.unwrap_or(0),
            idx(m.snapshot),
            idx(m.purged),
            voters.join(","),
            learners.join(","),
            repl.uncommitted(),
        );
        ctx.out.verbatim("txt", s.as_bytes());
        return Ok(());
    }
    if is(sub, "nodes") {
        let members = m.membership_config.membership();
        let mut lines = Vec::new();
        for (id, node) in members.nodes() {
            let role = if m.current_leader == Some(*id) {
                "leader"
            } else if members.voter_ids().any(|v| v == *id) {
                "follower"
            } else {
                "learner"
            };
            let matched = m.replication.as_ref().and_then(|r| r.get(id).copied().flatten()).map(|l| l.index);
            let last = m.last_log_index.unwrap_or(0);
            let matched = if *id == m.id { Some(last) } else { matched };
            let lag = matched.map_or(String::from("-"), |x| last.saturating_sub(x).to_string());
            lines.push(format!(
                "{id} {} {} {role} {} {lag}",
                if node.client_addr.is_empty() { "-" } else { &node.client_addr },
                if node.raft_addr.is_empty() { "-" } else { &node.raft_addr },
                matched.map_or(String::from("-"), |x| x.to_string()),
            ));
        }
        let text = lines.join("\n") + "\n";
        ctx.out.verbatim("txt", text.as_bytes());
        return Ok(());
    }
    if is(sub, "snapshot") {
        // The snapshot is built in the background, as BGSAVE does.
        let raft = repl.raft.clone();
        tokio::spawn(async move {
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::warn!(error = %e, "RAFT SNAPSHOT failed");
            }
        });
        ctx.out.simple("Snapshot started");
        return Ok(());
    }
    Err(CmdError::Owned(format!(
        "ERR unknown subcommand '{}'. Try RAFT HELP.",
        String::from_utf8_lossy(sub).chars().take(128).collect::<String>()
    )))
}
