use clap::{Parser, Subcommand};
use projector::{Application, Config};

/// taskstream projector: builds the MongoDB views from the Kafka event log.
/// Settings come from `PROJECTOR_*` environment variables.
#[derive(Parser)]
#[command(name = "projector", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the event topics and keep the views up to date (the default).
    Run,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    service::telemetry::init();
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run().await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "projector failed to start or run");
            eprintln!("projector: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let app = Application::build(config).await?;
    tracing::info!(port = app.port(), "projector listening");
    app.run_until_stopped(service::shutdown::on_signal())
        .await?;
    Ok(())
}
