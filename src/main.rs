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
    },
    /// Version tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
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
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            runtime().block_on(run(config))
        }
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                print!("{}", tidemark::config::validate::describe_routes(&c));
                if let Err(e) = tidemark::token::KeyRing::from_config(&c.token) {
                    eprintln!("warning: {e}");
                }
                ExitCode::SUCCESS
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
        } => {
            tidemark::telemetry::init_logging(false);
            let opts = tidemark::demo::walkthrough::DemoOptions {
                lag,
                listen,
                admin_listen,
                once,
            };
            match runtime()
                .block_on(async { tidemark::demo::walkthrough::run(opts, shutdown_signal()).await })
            {
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
            println!(
                "{}",
                tidemark::token::inspect(&token, ring.as_ref(), SystemTime::now())
            );
            ExitCode::SUCCESS
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

async fn run(config: Config) -> ExitCode {
    let listeners = match tidemark::Listeners::bind(&config).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match tidemark::serve(config, listeners, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
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
