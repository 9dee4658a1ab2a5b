//! `mock-upstream`: [`MockUpstream`] as a process, for scripts that drive
//! the built `modelyard` binary (`scripts/schemathesis.sh`). Binds
//! `127.0.0.1:0`, prints its base URL (`http://127.0.0.1:PORT`) on one
//! line of stdout, and serves until it gets SIGINT or SIGTERM.

use modelyard_testkit::MockUpstream;

#[tokio::main]
async fn main() {
    let mock = MockUpstream::start().await;
    println!("{}", mock.base_url());
    // SIGTERM ends the process by its default action.
    let _ = tokio::signal::ctrl_c().await;
    drop(mock);
}
