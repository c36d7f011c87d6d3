use std::process::ExitCode;

use clap::Parser;
use ml_api::{
    config::{Cli, Command},
    lambda, memory, shutdown,
    startup::{self, Application},
    telemetry,
};

/// mimalloc instead of glibc's malloc: request handling allocates many small, short-lived
/// objects (JSON values, strings, tensors), where glibc spent about a quarter of the server's
/// time under load (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before the first allocations fault pages in; `--huge-pages true` allows them again below.
    let huge_pages_off = memory::huge_pages(false);
    let cli = Cli::parse_from(lambda::command_line(
        std::env::args_os(),
        std::env::var_os(lambda::RUNTIME_API_ENV),
    ));
    // Telemetry first, before the runtime, so Sentry and the exporters see every thread.
    let telemetry = match telemetry::init(&cli.telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("ml-api: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    // Reported once tracing is up: the first call's outcome, or allowing them again.
    let huge_pages = match cli.huge_pages {
        true => memory::huge_pages(true),
        false => huge_pages_off,
    };
    if let Err(error) = huge_pages {
        tracing::warn!(%error, "could not change the use of transparent huge pages");
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli.command)));
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "ml-api failed");
            eprintln!("ml-api: {error:#}");
            ExitCode::FAILURE
        }
    };
    drop(telemetry);
    code
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(config) => {
            let app = Application::build(*config).await?;
            app.run_until_stopped(shutdown::signal()).await
        }
        Command::Lambda(config) => lambda::run(*config).await,
        Command::Worker(config) => startup::run_worker(*config, shutdown::signal()).await,
        Command::Contract(config) => {
            let contract = startup::profile_contract(&config).await?;
            println!("{}", serde_json::to_string_pretty(&contract)?);
            Ok(())
        }
    }
}
