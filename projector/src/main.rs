use projector::{Application, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    service::telemetry::init();
    let result = async {
        let config = Config::from_env()?;
        let app = Application::build(config).await?;
        tracing::info!(port = app.port(), "projector listening");
        app.run_until_stopped(service::shutdown::on_signal())
            .await?;
        anyhow::Ok(())
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "projector failed to start or run");
            eprintln!("projector: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
