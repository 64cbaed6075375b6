use anyhow::Context;
use clap::{Parser, Subcommand};
use projector::{Application, Config};
use service::config::ExposeSecret;

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
    /// Rebuild a view from the first event into a new collection while the
    /// live one keeps serving, then swap it in atomically.
    ///
    /// Reads the topic without joining the live consumer group, pauses the
    /// live projector only for the final catch-up and the swap. Progress
    /// (events/s, ETA) and a summary go to stderr.
    Rebuild(RebuildArgs),
    /// Stream events from the Kafka log as NDJSON, for ad-hoc analysis.
    ///
    /// Reads up to the log's end as of the start, without joining any
    /// consumer group; progress (events/s, ETA) and a summary go to stderr.
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
struct RebuildArgs {
    /// The view to rebuild.
    #[arg(value_enum)]
    target: projector::rebuild::Target,
    /// Report what would be done (events to read, target collection) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Events per MongoDB round trip.
    #[arg(long, default_value_t = 5000)]
    batch_size: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// `beginning`, or an RFC 3339 time (found with Kafka's offsets-for-times).
    #[arg(long, default_value = "beginning")]
    from: projector::replay::ReplayFrom,
    /// Only these event types, comma-separated (e.g. `task.status_changed,task.created`).
    #[arg(long = "type", value_delimiter = ',')]
    types: Vec<String>,
    /// Output format (NDJSON: one event envelope per line).
    #[arg(long, value_enum, default_value_t = Format::Ndjson)]
    format: Format,
    /// Write to this file instead of stdout.
    #[arg(long)]
    output: Option<std::path::PathBuf>,
    /// Which logs to read.
    #[arg(long, value_enum, default_value_t = Streams::All)]
    streams: Streams,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Ndjson,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Streams {
    All,
    Tasks,
    Projects,
    Users,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run().await,
        Command::Replay(args) => replay(args),
        Command::Rebuild(args) => rebuild(args).await,
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
    // Logs go to stdout as JSON; the offline subcommands keep stdout for data.
    service::telemetry::init();
    let config = Config::from_env()?;
    let app = Application::build(config).await?;
    tracing::info!(port = app.port(), "projector listening");
    app.run_until_stopped(service::shutdown::on_signal())
        .await?;
    Ok(())
}

fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let config = Config::from_env()?;
    let topics = events::topics::Topics::with_prefix(config.kafka.topic_prefix.clone());
    let Format::Ndjson = args.format;
    let options = projector::replay::ReplayOptions {
        brokers: config.kafka.brokers.clone(),
        topics: match args.streams {
            Streams::All => vec![
                topics.task_events(),
                topics.project_events(),
                topics.user_events(),
            ],
            Streams::Tasks => vec![topics.task_events()],
            Streams::Projects => vec![topics.project_events()],
            Streams::Users => vec![topics.user_events()],
        },
        from: args.from,
        types: (!args.types.is_empty())
            .then(|| args.types.iter().map(|t| t.trim().to_owned()).collect()),
        progress: !args.quiet && std::io::stderr().is_terminal(),
    };
    let summary = match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let mut out = std::io::BufWriter::new(file);
            projector::replay::replay(&options, &mut out)?
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let s = projector::replay::replay(&options, &mut out)?;
            out.flush()?;
            s
        }
    };
    eprintln!(
        "replay: {} events read, {} written in {:.2?} ({:.0} events/s)",
        summary.read,
        summary.written,
        summary.elapsed,
        summary.rate()
    );
    Ok(())
}

async fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let config = Config::from_env()?;
    let db = read_model::mongo::connect_with(
        config.mongo.url.expose_secret(),
        &config.mongo.database,
        Some(config.mongodb_write_concern.write_concern()),
    )
    .await?;
    let options = projector::rebuild::RebuildOptions {
        brokers: config.kafka.brokers.clone(),
        topics: events::topics::Topics::with_prefix(config.kafka.topic_prefix.clone()),
        target: args.target,
        dry_run: args.dry_run,
        progress: !args.quiet && std::io::stderr().is_terminal(),
        batch_size: args.batch_size,
    };
    let report = projector::rebuild::rebuild(&db, &options, service::shutdown::on_signal()).await?;
    let live = args.target.live_collection();
    if report.swapped {
        eprintln!(
            "rebuild: {live} rebuilt from {} events in {:.2?} ({:.0} events/s): {} applied, {} duplicates, {} gaps, {} poison, {} undecodable; live projector paused {:.2?}",
            report.counts.read,
            report.elapsed,
            report.rate(),
            report.counts.applied,
            report.counts.duplicates,
            report.counts.gaps,
            report.counts.poison,
            report.counts.undecodable,
            report.paused,
        );
    } else {
        eprintln!(
            "rebuild --dry-run: would read {} events from the beginning into {} (with its indexes), then swap it in as {live}; nothing changed",
            report.planned, report.collection
        );
    }
    Ok(())
}
