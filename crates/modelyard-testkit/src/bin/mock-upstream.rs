//! `mock-upstream`: [`MockUpstream`] as a process, for scripts that drive
//! the built `modelyard` binary (`scripts/schemathesis.sh`,
//! `scripts/bench-compare.sh`). Binds `127.0.0.1:0`, prints its base URL
//! (`http://127.0.0.1:PORT`) on one line of stdout, and serves until it gets
//! SIGINT or SIGTERM.
//!
//! `--no-record` turns request recording off
//! ([`MockUpstream::set_record_requests`]), so a long load run neither grows
//! the process's memory nor pays for the copies (the benchmarks use it).

use modelyard_testkit::MockUpstream;

#[tokio::main]
async fn main() {
    let no_record = std::env::args().skip(1).any(|a| a == "--no-record");
    let mock = MockUpstream::start().await;
    if no_record {
        mock.set_record_requests(false);
    }
    println!("{}", mock.base_url());
    // SIGTERM ends the process by its default action.
    let _ = tokio::signal::ctrl_c().await;
    drop(mock);
}
