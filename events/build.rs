// `sqlx::migrate!` embeds ../migrations at compile time; rebuild when a
// migration is added or changed, or the store would run a stale set.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
