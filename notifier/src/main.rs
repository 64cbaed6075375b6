use notifier::{Application, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    service::telemetry::init();
    let result = async {
        let config = Config::from_env()?;
        let app = Application::build(config, None).await?;
        tracing::info!(port = app.port(), "notifier listening");
        app.run_until_stopped(service::shutdown::on_signal())
            .await?;
        anyhow::Ok(())
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "notifier failed to start or run");
            eprintln!("notifier: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
