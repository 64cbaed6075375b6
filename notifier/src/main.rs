use clap::{Parser, Subcommand};
use notifier::{Application, Config};

/// taskstream notifier: turns the event log into reminders, notices, an
/// inbox, e-mail and webhooks. Settings come from `NOTIFIER_*` environment
/// variables.
#[derive(Parser)]
#[command(name = "notifier", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the log, fire the schedule, deliver, serve the API (the default).
    Run,
    /// Rebuild the schedule from the first event: with every notifier of
    /// the consumer group stopped, rewind the group to the beginning and
    /// empty the folded state; the notifier started next re-reads the log.
    /// The inbox and the deliveries are kept, and nothing is sent twice.
    Rebuild,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    service::telemetry::init();
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run().await,
        Command::Rebuild => rebuild().await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "notifier failed");
            eprintln!("notifier: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let app = Application::build(config, None).await?;
    tracing::info!(port = app.port(), "notifier listening");
    app.run_until_stopped(service::shutdown::on_signal())
        .await?;
    Ok(())
}

async fn rebuild() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let report = notifier::rebuild::rebuild(&config).await?;
    eprintln!(
        "rebuild: group {} rewound on {} partitions ({} events to re-read); \
         removed {} tasks, {} projects, {} users, {} schedule rows; \
         start the notifier to rebuild",
        config.group_id,
        report.partitions,
        report.events,
        report.tasks,
        report.projects,
        report.users,
        report.schedule
    );
    Ok(())
}
