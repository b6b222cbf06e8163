//! The `redoubt` binary: `redoubt [config-file] [--directive value ...]`, like redis-server.

use redoubt_server::memory::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// The command line: an optional config file, then every config directive as a flag.
/// The flags are generated from the directive table so that `--help` lists them all and
/// an unknown directive is rejected by name.
fn cli() -> clap::Command {
    let mut cmd = clap::Command::new("redoubt")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A Redis-compatible server (RESP2/RESP3, Redis 7 commands)")
        .arg(clap::Arg::new("config-file").help("redis.conf-style configuration file").required(false));
    for d in redoubt_server::config::directives() {
        let mut arg = clap::Arg::new(d.name)
            .long(d.name)
            .num_args(0..)
            .allow_hyphen_values(true)
            .action(clap::ArgAction::Append)
            .value_name("VALUE");
        if let Some(alias) = d.alias {
            arg = arg.alias(alias);
        }
        cmd = cmd.arg(arg);
    }
    cmd
}

fn main() {
    let matches = cli().get_matches();
    // Re-assemble `--name values...` in command-line order so later flags win, exactly like
    // redis-server applies its arguments after the config file.
    let mut ordered: Vec<(usize, String, Vec<String>)> = Vec::new();
    for d in redoubt_server::config::directives() {
        if matches.value_source(d.name) != Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        let vals: Vec<String> = matches.get_many::<String>(d.name).map(|v| v.cloned().collect()).unwrap_or_default();
        let idx = matches.index_of(d.name).unwrap_or(0);
        ordered.push((idx, d.name.to_string(), vals));
    }
    ordered.sort_by_key(|(i, _, _)| *i);
    let mut args: Vec<String> = Vec::new();
    if let Some(file) = matches.get_one::<String>("config-file") {
        args.push(file.clone());
    }
    for (_, name, vals) in ordered {
        args.push(format!("--{name}"));
        args.extend(vals);
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
    // openraft narrates every election and snapshot at info; below debug, only its
    // warnings reach the operator's log.
    let quiet_deps = if level == "debug" { String::new() } else { ",openraft=warn,sled=warn".to_string() };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level}{quiet_deps}")));
    redoubt_server::logging::init(filter);
    redoubt_server::memory::mark_installed();

    // `io-threads` sizes the runtime: 1 (Redis's default) runs every connection on one
    // worker thread, like Redis's event loop; more spreads connections over workers. Always
    // the multi-threaded scheduler, even for one worker: a long Lua script hands its
    // worker's other duties to a fresh thread (`block_in_place`), so other clients get
    // `-BUSY` and SCRIPT KILL / FUNCTION KILL reach the script, as on Redis. A
    // current-thread runtime would freeze every connection for the script's length.
    let workers = config.effective_io_threads();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1) as usize)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(serve(config)) {
        tracing::error!(error = format!("{e:#}"), "fatal");
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
        let addr =
            if host.contains(':') { format!("[{host}]:{}", config.port) } else { format!("{host}:{}", config.port) };
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
    redoubt_server::run(listener, config, redoubt_server::shutdown_signal()).await
}
