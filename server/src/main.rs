//! The `redoubt` binary: `redoubt [config-file] [--directive value ...]`, like redis-server.

use redoubt_server::memory::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{}", usage());
        return;
    }
    if args.iter().any(|a| a == "-v" || a == "--version") {
        println!("redoubt v={} (Redis 7.2 compatible)", env!("CARGO_PKG_VERSION"));
        return;
    }
    let config = match redoubt_server::Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("\n*** FATAL CONFIG FILE ERROR (redoubt {}) ***\n{e}", env!("CARGO_PKG_VERSION"));
            std::process::exit(1);
        }
    };
    let level = match config.loglevel.as_str() {
        "debug" => "debug",
        "verbose" => "info",
        "warning" => "warn",
        "nothing" => "off",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    redoubt_server::memory::mark_installed();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = rt.block_on(serve(config)) {
        tracing::error!(error = %e, "fatal");
        std::process::exit(1);
    }
}

async fn serve(config: redoubt_server::Config) -> anyhow::Result<()> {
    // Bind the first usable address of `bind` (a leading '-' means "skip if unavailable").
    let mut listener = None;
    let mut last_err = None;
    for b in &config.bind {
        let (optional, host) = match b.strip_prefix('-') {
            Some(h) => (true, h),
            None => (false, b.as_str()),
        };
        let addr = if host.contains(':') { format!("[{host}]:{}", config.port) } else { format!("{host}:{}", config.port) };
        match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(e) if optional => last_err = Some(e),
            Err(e) => anyhow::bail!("could not bind {addr}: {e}"),
        }
    }
    let listener = listener.ok_or_else(|| anyhow::anyhow!("no bind address usable: {last_err:?}"))?;
    tracing::info!(addr = %listener.local_addr()?, version = env!("CARGO_PKG_VERSION"), "redoubt ready to accept connections");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("received shutdown signal");
    };
    redoubt_server::run(listener, config, shutdown).await
}

fn usage() -> &'static str {
    "Usage: redoubt [/path/to/redoubt.conf] [--directive value ...]\n\
     \n\
     Every redis.conf directive redoubt knows is also a flag, e.g.\n\
       redoubt --port 7000 --bind 127.0.0.1 --requirepass s3cret --maxmemory 1gb --maxmemory-policy allkeys-lru\n\
     Unknown directives are rejected by name."
}
