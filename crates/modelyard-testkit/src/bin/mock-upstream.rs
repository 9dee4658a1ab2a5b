//! `mock-upstream`: [`MockUpstream`] as a process, for scripts that drive
//! the built `modelyard` binary (`scripts/schemathesis.sh`,
//! `scripts/bench-compare.sh`). Binds `127.0.0.1:0`, prints its base URL
//! (`http://127.0.0.1:PORT`) on one line of stdout, and serves until it gets
//! SIGINT or SIGTERM.
//!
//! Options:
//! * `--no-record` turns request recording off
//!   ([`MockUpstream::set_record_requests`]), so a long load run neither
//!   grows the process's memory nor pays for the copies (the benchmarks use
//!   it);
//! * `--model ID` (repeatable) lists `ID` too in the discovery answers, next
//!   to [`MODEL_IDS`] (context window 4096), so that a gateway which only
//!   routes to discovered models can reach a behaviour with another
//!   parameter (`slow-first:20@5`).

use modelyard_testkit::{MockModel, MockOptions, MockUpstream, MODEL_IDS};

#[tokio::main]
async fn main() {
    let mut no_record = false;
    let mut extra = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-record" => no_record = true,
            "--model" => extra.extend(args.next()),
            other => {
                eprintln!("mock-upstream: unknown argument {other:?} (--no-record, --model ID)");
                std::process::exit(2);
            }
        }
    }
    let mut options = MockOptions::default();
    options.models.extend(
        extra
            .into_iter()
            .filter(|id| !MODEL_IDS.contains(&id.as_str()))
            .map(|id| MockModel::new(id, Some(4096))),
    );
    let mock = MockUpstream::start_with(options).await;
    if no_record {
        mock.set_record_requests(false);
    }
    println!("{}", mock.base_url());
    // SIGTERM ends the process by its default action.
    let _ = tokio::signal::ctrl_c().await;
    drop(mock);
}
