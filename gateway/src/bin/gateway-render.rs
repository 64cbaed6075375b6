//! `gateway-render`: writes `openapi.json`, `routes.map` and `allow.map`
//! into the gateway crate's directory from the services' documents.
//! `--check` writes nothing and exits 1 naming the files that differ.

use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "usage: gateway-render [--check]";

fn main() -> ExitCode {
    let mut check = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let files = match gateway::generate() {
        Ok(files) => files,
        Err(e) => {
            eprintln!("the services' documents do not merge: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for file in &files {
        let path = dir.join(file.name);
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(file.content.as_str()) {
            continue;
        }
        if check {
            stale.push(path.display().to_string());
        } else if let Err(e) = std::fs::write(&path, &file.content) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "stale (differ from what the services' documents give): {}\nrun `{}`",
        stale.join(", "),
        gateway::RENDER_COMMAND
    );
    ExitCode::FAILURE
}
