//! Stopping the server processes a test runs of its own (a Kafka broker, a
//! MongoDB-wire server): one way to kill them and to reap them on drop.

use std::time::{Duration, Instant};

use tokio::process::Child;

/// SIGKILLs the running `child` (`what` names it), then waits until it is gone.
pub async fn kill(child: &mut Option<Child>, what: &str) {
    let mut child = child
        .take()
        .unwrap_or_else(|| panic!("{what} is not running"));
    child
        .kill()
        .await
        .unwrap_or_else(|e| panic!("kill {what}: {e}"));
}

/// For `Drop`: SIGKILLs `child` if it runs and reaps it for up to 10 s, so
/// its data directory is no longer in use when the caller removes it.
pub fn kill_and_reap(child: &mut Option<Child>) {
    if let Some(child) = child {
        let _ = child.start_kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
