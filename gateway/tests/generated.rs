//! The committed `openapi.json`, `routes.map` and `allow.map` are what
//! `gateway-render` would write from the services' documents today.

use std::path::Path;

#[test]
fn the_committed_files_are_what_the_services_documents_give() {
    let files =
        gateway::generate().unwrap_or_else(|e| panic!("the services' documents do not merge: {e}"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let stale: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read_to_string(dir.join(f.name)).ok().as_deref() != Some(&f.content))
        .map(|f| format!("gateway/{}", f.name))
        .collect();
    assert!(
        stale.is_empty(),
        "stale (a service's API changed since they were generated): {}\n\
         run `{}` and commit the result",
        stale.join(", "),
        gateway::RENDER_COMMAND
    );
}

#[test]
fn rendering_twice_gives_the_same_bytes() {
    let first = gateway::generate().expect("the documents merge");
    let second = gateway::generate().expect("the documents merge");
    assert_eq!(first, second);
}
