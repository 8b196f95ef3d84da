//! The `tidemark` command line: run, check, demo, token inspect|keygen, checkpoint push.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use tidemark::config::{Config, TokenAlgorithm};

#[derive(Parser)]
#[command(
    name = "tidemark",
    version,
    about = "A read-your-writes consistency gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Log JSON lines instead of text (also `TIDEMARK_LOG_JSON=true`).
        #[arg(long, env = "TIDEMARK_LOG_JSON")]
        log_json: bool,
    },
    /// Validate a config file and print the route table.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run an example command service, a lagging projector and a read service
    /// in-process, the gateway in front, and walk through a write and a read.
    Demo {
        /// How far the projection lags behind the writes.
        #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
        lag: Duration,
        /// The gateway's client listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The gateway's admin listener.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: std::net::SocketAddr,
        /// Exit after the walkthrough instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
        /// Keep the log in this PostgreSQL (schema `tidemark_demo`, dropped and
        /// recreated): the gateway reads positions there with a fence and the
        /// `postgres` source.
        #[arg(long, value_name = "URL", conflicts_with = "nats")]
        postgres: Option<String>,
        /// Keep the log in a JetStream stream on this NATS server (stream
        /// `TIDEMARK_DEMO`, deleted and recreated): the gateway reads positions there
        /// with a `nats_stream` fence and the `nats` source.
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
    },
    /// Version tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Projection checkpoints.
    Checkpoint {
        #[command(subcommand)]
        command: CheckpointCommand,
    },
}

#[derive(Subcommand)]
enum CheckpointCommand {
    /// Report a projection's checkpoint to a gateway's admin API (exit 0 on 204).
    Push {
        /// The gateway's admin listener.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: String,
        /// The projection, as in `[projections.NAME]`.
        #[arg(long)]
        projection: String,
        /// One instance of the projection (default: every instance).
        #[arg(long)]
        instance: Option<String>,
        /// Variable holding the admin bearer token (the gateway's `admin.token_env`).
        #[arg(long)]
        token_env: Option<String>,
        /// The checkpoint: `users=1234,orders=88`, or `1234` for a one-log projection.
        position: String,
    },
    /// Run every `postgres` and `kafka` checkpoint source and every write fence
    /// (`postgres`, `kafka_topic`) of a config once and print what each read (exit 1
    /// if any failed).
    Show {
        /// The gateway's config file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Decode a token; verify it too when --config names the gateway's config.
    Inspect {
        token: String,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print new key material.
    Keygen {
        #[arg(long, value_enum, default_value = "hs256")]
        alg: Alg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Alg {
    #[value(name = "hs256", alias = "HS256")]
    Hs256,
    #[value(name = "eddsa", alias = "EdDSA")]
    EdDsa,
    #[value(name = "es256", alias = "ES256")]
    Es256,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, log_json } => {
            tidemark::telemetry::init_logging(log_json);
            let path = config;
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            for warning in tidemark::config::lint::warnings(&config) {
                tracing::warn!("{warning}");
            }
            runtime().block_on(run(config, path))
        }
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                print!("{}", tidemark::config::validate::describe_routes(&c));
                for warning in tidemark::config::lint::warnings(&c) {
                    eprintln!("warning: {warning}");
                }
                // What `run` builds after validation (keys, route table, TLS files):
                // `check` fails wherever `run` would refuse to start.
                match tidemark::preflight(&c) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(errors) => {
                        eprintln!("{}", tidemark::ServeError::Start(errors));
                        ExitCode::from(2)
                    }
                }
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Demo {
            lag,
            listen,
            admin_listen,
            once,
            postgres,
            nats,
        } => {
            tidemark::telemetry::init_logging(false);
            let opts = tidemark::demo::walkthrough::DemoOptions {
                lag,
                listen,
                admin_listen,
                once,
            };
            let demo = async {
                use tidemark::demo;
                match (postgres, nats) {
                    (Some(url), _) => demo::postgres::run(opts, &url, shutdown_signal())
                        .await
                        .map(drop),
                    (None, Some(url)) => demo::nats::run(opts, &url, shutdown_signal())
                        .await
                        .map(drop),
                    (None, None) => demo::walkthrough::run(opts, shutdown_signal()).await,
                }
            };
            match runtime().block_on(demo) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("demo failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Token {
            command: TokenCommand::Keygen { alg },
        } => {
            let alg = match alg {
                Alg::Hs256 => TokenAlgorithm::Hs256,
                Alg::EdDsa => TokenAlgorithm::EdDsa,
                Alg::Es256 => TokenAlgorithm::Es256,
            };
            print!("{}", tidemark::token::keygen(alg));
            ExitCode::SUCCESS
        }
        Command::Token {
            command: TokenCommand::Inspect { token, config },
        } => {
            let ring = match config.map(|p| Config::load(&p)) {
                None => None,
                Some(Ok(c)) => match tidemark::token::KeyRing::from_config(&c.token) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                },
                Some(Err(e)) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let now = SystemTime::now();
            println!("{}", tidemark::token::inspect(&token, ring.as_ref(), now));
            use tidemark::token::Verdict;
            match tidemark::token::verdict(&token, ring.as_ref(), now) {
                Verdict::Verified | Verdict::Decoded => ExitCode::SUCCESS,
                Verdict::NotVerified | Verdict::NotJwt => ExitCode::FAILURE,
            }
        }
        Command::Checkpoint {
            command:
                CheckpointCommand::Push {
                    admin,
                    projection,
                    instance,
                    token_env,
                    position,
                },
        } => {
            use tidemark::cli_checkpoint as cp;
            let push = async {
                let token = token_env.as_deref().map(cp::token_from_env).transpose()?;
                let push = cp::CheckpointPush {
                    admin,
                    projection,
                    instance,
                    token,
                    position,
                };
                cp::push(&push).await
            };
            match runtime().block_on(push) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tidemark checkpoint push: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Checkpoint {
            command: CheckpointCommand::Show { config },
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let (report, ok) = runtime().block_on(tidemark::cli_checkpoint::show(&config));
            print!("{report}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

async fn run(config: Config, path: PathBuf) -> ExitCode {
    let listeners = match tidemark::Listeners::bind(&config).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let options = tidemark::ServeOptions {
        reload_from: Some(tidemark::reload::ReloadSource { path, env: None }),
        reload_signal: Some(reload_signal()),
    };
    match tidemark::serve_with(config, listeners, shutdown_signal(), options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Notified on each SIGHUP: reload the config file.
fn reload_signal() -> std::sync::Arc<tokio::sync::Notify> {
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let tx = notify.clone();
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::info!("SIGHUP: reloading the config");
                        tx.notify_one();
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with POST /reload")
            }
        }
    }
    notify
}

/// A token cancelled on SIGINT or SIGTERM.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = match signal(SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    cancel.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}
