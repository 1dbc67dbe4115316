//! `ovseg orchestrator`: the meeting point of a multi-machine run (burn-collective's global
//! orchestrator). Start it once, anywhere every machine can reach; each machine then runs
//! `ovseg train --nodes N --node-rank R --orchestrator ws://HOST:PORT ...`.

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Port to listen on (WebSocket).
    #[arg(long, default_value_t = 9000)]
    port: u16,
}

pub fn run(args: Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    eprintln!(
        "orchestrator listening on port {} (machines join with --orchestrator ws://<this host>:{}); Ctrl-C stops it",
        args.port, args.port
    );
    runtime.block_on(burn_collective::start_global_orchestrator(args.port));
    Ok(())
}
