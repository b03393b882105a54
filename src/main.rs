//! The `cloakroom` command: parse the command line, load the configuration,
//! set up logging, bind, and hand over to [`cloakroom::server::run`].

#![recursion_limit = "256"]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cloakroom::config::{self, Config, LogFormat, Source};
use cloakroom::{server, App};
use tracing_subscriber::EnvFilter;

/// mimalloc: per-thread free lists suit a server's many small, short-lived
/// allocations (glibc malloc took ~7% of the CPU under load).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A reverse proxy that gives an unmodified web application server-side sessions.
#[derive(Parser)]
#[command(name = "cloakroom", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Configuration file [default: ./proxy.toml]
    #[arg(long, short, global = true, env = config::CONFIG_ENV, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default). CLOAKROOM_LISTEN and CLOAKROOM_UPSTREAM_URL
    /// override `listen` and `upstream.url`.
    Run,
    /// Validate the configuration and print it with every default filled in;
    /// exit 1 with a message naming the key on error.
    Check,
    /// Start a built-in demo app with cloakroom in front of it, for a first look.
    Demo {
        /// Where cloakroom listens.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: std::net::SocketAddr,
    },
    /// Read a password from stdin (without echo on a terminal) and print its
    /// argon2id PHC string, for `auth.users_file`.
    HashPassword,
    /// Drive many virtual users, each with its own session, through the
    /// session path of a deployment, and report.
    Load(LoadArgs),
}

#[derive(clap::Args)]
struct LoadArgs {
    /// The page to request (http:// or https://).
    #[arg(long)]
    target: String,
    /// Virtual users, each with its own session.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// How long to run (e.g. 30s, 2m) [default: 30s].
    #[arg(long, conflicts_with = "requests")]
    duration: Option<String>,
    /// Stop after this many requests instead.
    #[arg(long)]
    requests: Option<u64>,
    /// Open loop: this many requests per second, latency measured from when
    /// each was due.
    #[arg(long)]
    rate: Option<f64>,
    /// Each user logs in first, through /.cloakroom/login.
    #[arg(long, value_name = "USER:PASSWORD")]
    login: Option<String>,
    /// Users refuse cookies: they follow the probe into URL mode.
    #[arg(long)]
    cookieless: bool,
    /// Weighted paths, one `WEIGHT PATH` per line.
    #[arg(long, value_name = "FILE")]
    paths: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// How long one request may take.
    #[arg(long, default_value = "30s")]
    timeout: String,
    /// Also trust the CA certificates in this PEM file (https targets).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::HashPassword) => return hash_password(),
        Some(Command::Demo { listen }) => return demo(listen),
        Some(Command::Load(args)) => return load(args),
        _ => {}
    }
    let source = match cli.config {
        Some(path) => Source::Named(path),
        None => Source::Default,
    };
    let config = match Config::load(&source) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("cloakroom: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => {
            // Files the config names are checked too, without creating any.
            if let Some(path) = &config.auth.users_file {
                if let Err(e) = cloakroom::auth::password::Users::load(path) {
                    eprintln!("cloakroom: auth.users_file: {e}");
                    return ExitCode::FAILURE;
                }
            }
            if let Some(path) = &config.admin.token_file {
                if let Err(e) = cloakroom::read_token(path) {
                    eprintln!("cloakroom: {e}");
                    return ExitCode::FAILURE;
                }
            }
            let secret = &config.session.secret_file;
            if secret.exists() {
                if let Err(e) = cloakroom::session::id::Keys::load(secret) {
                    eprintln!("cloakroom: session.secret_file: {}: {e}", secret.display());
                    return ExitCode::FAILURE;
                }
            }
            if let Some(assertion) = &config.identity.assertion {
                if let Err(e) = cloakroom::assertion::Assertion::check(assertion) {
                    eprintln!("cloakroom: {e}");
                    return ExitCode::FAILURE;
                }
            }
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Command::Run => run(config, source),
        Command::Demo { .. } | Command::HashPassword | Command::Load(_) => ExitCode::FAILURE,
    }
}

fn hash_password() -> ExitCode {
    use std::io::{BufRead, IsTerminal};
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ");
        let again = rpassword::prompt_password("Again: ");
        match (first, again) {
            (Ok(a), Ok(b)) if a == b => a,
            (Ok(_), Ok(_)) => {
                eprintln!("cloakroom: the passwords differ");
                return ExitCode::FAILURE;
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("cloakroom: cannot read the password: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
            eprintln!("cloakroom: cannot read the password: {e}");
            return ExitCode::FAILURE;
        }
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        eprintln!("cloakroom: the password is empty");
        return ExitCode::FAILURE;
    }
    match cloakroom::auth::password::hash(&password) {
        Ok(phc) => {
            println!("{phc}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cloakroom: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(args: LoadArgs) -> ExitCode {
    use std::io::IsTerminal;
    let options = match load_options(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("cloakroom load: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cloakroom load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let progress = std::io::stderr().is_terminal();
    match runtime.block_on(cloakroom::load::run(options, progress)) {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cloakroom load: {e}");
            ExitCode::from(2)
        }
    }
}

fn load_options(args: &LoadArgs) -> Result<cloakroom::load::Options, String> {
    use cloakroom::load::{read_paths, Options, Stop};
    let target =
        url::Url::parse(&args.target).map_err(|e| format!("--target {:?}: {e}", args.target))?;
    let duration = |flag: &str, text: &str| {
        humantime::parse_duration(text).map_err(|e| format!("{flag} {text:?}: {e}"))
    };
    let stop = match (&args.duration, args.requests) {
        (_, Some(n)) => Stop::Requests(n),
        (Some(d), None) => Stop::After(duration("--duration", d)?),
        (None, None) => Stop::After(std::time::Duration::from_secs(30)),
    };
    let login = match &args.login {
        Some(text) => {
            let (user, password) = text
                .split_once(':')
                .ok_or_else(|| "--login: expected USER:PASSWORD".to_owned())?;
            Some((user.to_owned(), password.to_owned()))
        }
        None => None,
    };
    let paths = match &args.paths {
        Some(file) => read_paths(file).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let options = Options {
        target,
        users: args.users,
        stop,
        rate: args.rate,
        login,
        cookieless: args.cookieless,
        paths,
        timeout: duration("--timeout", &args.timeout)?,
        ca_file: args.ca_file.clone(),
    };
    options.check().map_err(|e| e.to_string())?;
    Ok(options)
}

fn demo(listen: std::net::SocketAddr) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cloakroom: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cloakroom::demo::run(listen, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloakroom: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config, source: Source) -> ExitCode {
    init_logging(&config);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.server.work_stealing {
        runtime.worker_threads(config.server.threads);
    } else {
        // Connections are served by a runtime per core (see
        // `server::Listeners`); this one keeps the background work.
        runtime.worker_threads(1);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cloakroom: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listen = config.listen;
        let upstream = config.upstream.url.clone();
        let app = match App::build(config).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("cloakroom: {e}");
                return ExitCode::FAILURE;
            }
        };
        let listener = match server::Listeners::bind(listen, &app.settings().config.server) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cloakroom: listen: cannot bind {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().unwrap_or(listen);
        let scheme = if app.settings().tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(
            %upstream,
            threads = listener.threads(),
            work_stealing = app.settings().config.server.work_stealing,
            "cloakroom listening on {scheme}://{addr}"
        );
        let admin = match app.settings().config.admin.listen {
            Some(at) => match tokio::net::TcpListener::bind(at).await {
                Ok(l) => {
                    tracing::info!("admin listener on http://{}", l.local_addr().unwrap_or(at));
                    Some(tokio::spawn(cloakroom::admin::serve(
                        l,
                        app.clone(),
                        std::future::pending(),
                    )))
                }
                Err(e) => {
                    eprintln!("cloakroom: admin.listen: cannot bind {at}: {e}");
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        let reloads = tokio::spawn(reload_on_hangup(app.clone(), source));
        let served = server::run(listener, app.clone(), shutdown_signal()).await;
        reloads.abort();
        if let Some(admin) = admin {
            admin.abort();
        }
        app.shutdown();
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGHUP: read the configuration again and reload what can be reloaded
/// (see [`App::reload`]); a broken one keeps the running one.
async fn reload_on_hangup(app: std::sync::Arc<App>, source: Source) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload needs a restart");
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let _ = app.reload(Config::load(&source)).await;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (app, source);
        std::future::pending::<()>().await;
    }
}

fn init_logging(config: &Config) {
    // RUST_LOG, when set, wins over `log.level`.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown signal received");
}
