//! The `redoubt-gateway` binary.
//!
//! ```text
//! redoubt-gateway --smpp-port 2775 --http-port 8080 --state 10.0.0.1:6379,10.0.0.2:6379 \
//!                 --pod-id pod-a --api-key KEY
//! redoubt-gateway --embed --port 7001 --dir /data --node-id 1 --cluster 1@a:17001,2@b:17001,3@c:17001 ...
//! ```
//!
//! Every flag has an environment variable (`GATEWAY_SMPP_PORT`, ...) and a config-file line
//! (`--config FILE`, one `name value` per line, `#` comments, the flag names without `--`).
//! Precedence: command line, then environment, then file.

use clap::Parser;
use redoubt_gateway::{Gateway, Settings};
use redoubt_server::memory::CountingAlloc;

/// The embedded node's INFO memory and `maxmemory` read this allocator's count, as in
/// `redoubt` itself.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[derive(Parser, Debug)]
#[command(
    name = "redoubt-gateway",
    version,
    about = "SMPP gateway with all its state in redoubt",
    args_override_self = true
)]
struct Args {
    /// Config file: one `flag value` per line (flag names without `--`).
    #[arg(long, env = "GATEWAY_CONFIG")]
    config: Option<String>,
    /// Port for customer SMPP binds.
    #[arg(long, env = "GATEWAY_SMPP_PORT", default_value_t = 2775)]
    smpp_port: u16,
    /// Port for the management API, /health and /metrics.
    #[arg(long, env = "GATEWAY_HTTP_PORT", default_value_t = 8080)]
    http_port: u16,
    /// Address both listeners bind.
    #[arg(long, env = "GATEWAY_BIND", default_value = "0.0.0.0")]
    bind: String,
    /// redoubt nodes (host:port, comma-separated); any node takes any command.
    #[arg(long, env = "GATEWAY_STATE", value_delimiter = ',')]
    state: Vec<String>,
    /// This pod's name: unique among the pods sharing one store.
    #[arg(long, env = "GATEWAY_POD_ID")]
    pod_id: Option<String>,
    /// API key(s) for /api (X-API-Key or Authorization: Bearer); comma-separated or repeated.
    #[arg(long, env = "GATEWAY_API_KEY", value_delimiter = ',')]
    api_key: Vec<String>,
    /// Seconds that messages, receipts and vendor-id mappings are kept.
    #[arg(long, env = "GATEWAY_MESSAGE_TTL", default_value_t = 86_400)]
    message_ttl: u64,
    /// Seconds a message may wait for a bound vendor before failing as EXPIRED.
    #[arg(long, env = "GATEWAY_UNDELIVERABLE_AFTER", default_value_t = 600)]
    undeliverable_after: u64,
    /// Run a redoubt node inside this process and keep the state there (with --port, --dir,
    /// --node-id and --cluster, as `redoubt` takes them).
    #[arg(long, env = "GATEWAY_EMBED")]
    embed: bool,
    /// --embed: the node's client port.
    #[arg(long, env = "GATEWAY_PORT", default_value_t = 6379)]
    port: u16,
    /// --embed: the node's data directory.
    #[arg(long, env = "GATEWAY_DIR")]
    dir: Option<String>,
    /// --embed: the node's Raft id.
    #[arg(long, env = "GATEWAY_NODE_ID")]
    node_id: Option<u64>,
    /// --embed: the initial cluster, `id@host:raftport,...`.
    #[arg(long, env = "GATEWAY_CLUSTER")]
    cluster: Option<String>,
    /// Log filter (tracing's EnvFilter syntax; RUST_LOG wins).
    #[arg(long, env = "GATEWAY_LOG", default_value = "info")]
    log: String,
}

/// The command line with the config file's lines put in front (so the command line wins).
fn argv() -> Result<Vec<String>, String> {
    let cli: Vec<String> = std::env::args().collect();
    let file = cli
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| cli.get(i + 1).cloned())
        .or_else(|| cli.iter().find_map(|a| a.strip_prefix("--config=").map(String::from)))
        .or_else(|| std::env::var("GATEWAY_CONFIG").ok());
    let mut out = vec![cli[0].clone()];
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            if name == "config" {
                return Err(format!("{path}:{}: a config file cannot name another", n + 1));
            }
            out.push(format!("--{name}"));
            if !value.trim().is_empty() {
                out.push(value.trim().to_string());
            }
        }
    }
    out.extend(cli.into_iter().skip(1));
    Ok(out)
}

fn main() {
    let args = match argv() {
        Ok(a) => Args::parse_from(a),
        Err(e) => {
            eprintln!("redoubt-gateway: {e}");
            std::process::exit(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{},openraft=warn,sled=warn", args.log)));
    redoubt_server::logging::init(filter);
    redoubt_server::memory::mark_installed();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = rt.block_on(serve(args)) {
        tracing::error!(error = %e, "fatal");
        std::process::exit(1);
    }
}

async fn serve(args: Args) -> Result<(), String> {
    if args.api_key.iter().all(|k| k.is_empty()) {
        return Err("at least one --api-key is required (the management API is never open)".into());
    }
    let mut state = args.state.clone();
    // Keeps the embedded node alive for the life of the process.
    let mut node = None;
    if args.embed {
        let mut sargs = vec!["--port".to_string(), args.port.to_string(), "--bind".into(), args.bind.clone()];
        if let Some(d) = &args.dir {
            sargs.extend(["--dir".into(), d.clone()]);
        }
        if let Some(n) = args.node_id {
            sargs.extend(["--node-id".into(), n.to_string()]);
        }
        if let Some(c) = &args.cluster {
            sargs.extend(["--cluster".into(), c.clone()]);
        }
        let config = redoubt_server::Config::from_args(&sargs).map_err(|e| format!("embedded node: {e}"))?;
        let addr = format!("{}:{}", args.bind, args.port);
        let handle = redoubt_server::start(&addr, config).await.map_err(|e| format!("embedded node: {e:#}"))?;
        tracing::info!(addr = %handle.addr, "embedded redoubt node started");
        // The local node first: it forwards writes to the leader itself.
        state.insert(0, format!("127.0.0.1:{}", handle.addr.port()));
        node = Some(handle);
    }
    if state.is_empty() {
        return Err("--state (or --embed) is required: where the gateway keeps its state".into());
    }
    let pod_id = args.pod_id.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| format!("pod-{}", std::process::id()))
    });
    let smpp = tokio::net::TcpListener::bind((args.bind.as_str(), args.smpp_port))
        .await
        .map_err(|e| format!("smpp port {}: {e}", args.smpp_port))?;
    let http = tokio::net::TcpListener::bind((args.bind.as_str(), args.http_port))
        .await
        .map_err(|e| format!("http port {}: {e}", args.http_port))?;
    // Tests and scripts read the real ports from this line when they pass port 0.
    println!(
        "redoubt-gateway: pod {pod_id} smpp {} http {}",
        smpp.local_addr().map_err(|e| e.to_string())?,
        http.local_addr().map_err(|e| e.to_string())?
    );
    let settings = Settings {
        pod_id,
        state,
        api_keys: args.api_key.into_iter().filter(|k| !k.is_empty()).collect(),
        message_ttl_ms: args.message_ttl * 1000,
        undeliverable_after_ms: args.undeliverable_after * 1000,
    };
    let gw = Gateway::new(settings);
    let shutdown = redoubt_server::shutdown_signal();
    tokio::select! {
        r = gw.run(smpp, http) => r.map_err(|e| e.to_string()),
        _ = shutdown => {
            // The embedded node flushes its log and stops its Raft tasks before the process ends.
            if let Some(node) = node.take() {
                node.shutdown().await;
            }
            Ok(())
        }
    }
}
