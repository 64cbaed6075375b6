use std::io::BufRead;

use auth::{Application, Config};
use clap::{Parser, Subcommand};
use service::config::ExposeSecret;

/// taskstream auth: serves the API, or runs one operator action and exits.
#[derive(Parser)]
#[command(name = "auth")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (what `auth` does without a subcommand).
    Serve,
    /// Create an admin account (the first admin). The password is read from
    /// AUTH_ADMIN_PASSWORD, or else from the first line of standard input.
    CreateAdmin {
        #[arg(long)]
        email: String,
        /// Defaults to the email's local part.
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Give an existing, active account the admin role.
    Promote {
        #[arg(long)]
        email: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    service::telemetry::init();
    let result = match cli.command {
        None | Some(Command::Serve) => serve().await,
        Some(Command::CreateAdmin {
            email,
            display_name,
        }) => create_admin(&email, display_name.as_deref()).await,
        Some(Command::Promote { email }) => promote(&email).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "auth failed");
            eprintln!("auth: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let app = Application::build(config).await?;
    tracing::info!(port = app.port(), "auth listening");
    app.run_until_stopped(service::shutdown::on_signal())
        .await?;
    Ok(())
}

async fn database() -> anyhow::Result<sqlx::PgPool> {
    let config = Config::from_env()?;
    Ok(events::store::connect_and_migrate(config.postgres.url.expose_secret(), 2).await?)
}

/// The new admin's password: `AUTH_ADMIN_PASSWORD`, else one line of stdin
/// (never a command-line argument, which other local users can read).
fn admin_password() -> anyhow::Result<String> {
    if let Ok(password) = std::env::var(auth::config::ADMIN_PASSWORD_VAR) {
        return Ok(password);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        anyhow::bail!("no password: set AUTH_ADMIN_PASSWORD or write it on standard input");
    }
    Ok(password.to_owned())
}

fn print_account(user: &auth::users::User) -> anyhow::Result<()> {
    let shown = serde_json::json!({
        "id": user.id,
        "email": user.email,
        "display_name": user.display_name,
        "role": user.role,
        "active": user.active,
    });
    println!("{shown}");
    Ok(())
}

async fn create_admin(email: &str, display_name: Option<&str>) -> anyhow::Result<()> {
    let password = admin_password()?;
    let pool = database().await?;
    let user = auth::operator::create_admin(&pool, email, password, display_name).await?;
    tracing::info!(user_id = %user.id, "admin account created by the operator");
    print_account(&user)
}

async fn promote(email: &str) -> anyhow::Result<()> {
    let pool = database().await?;
    let user = auth::operator::promote(&pool, email).await?;
    tracing::info!(user_id = %user.id, "account made admin by the operator");
    print_account(&user)
}
