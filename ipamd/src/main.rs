use clap::Parser;
use ipamd::cli::{Cli, Command};
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IPAMD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ipamd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout();
    let result = rt.block_on(async {
        match &cli.command {
            Command::Run(a) => ipamd::backends::run(a.clone()).await,
            Command::Nodes(a) => ipamd::inspect::nodes(a, &mut out).await,
            Command::Blocks(a) => ipamd::inspect::blocks(a, &mut out).await,
            Command::Usage(a) => ipamd::inspect::usage(a, &mut out).await,
            Command::Pod(a) => ipamd::inspect::pod(a, &mut out),
            Command::Release(a) => ipamd::inspect::release(a, &mut out),
            Command::RemoveNode(a) => ipamd::inspect::remove_node(a, &mut out).await,
            Command::Bench(a) => ipamd::bench::run(a, &mut out).await,
            Command::BgpPeers(a) => ipamd::bgp::status::bgp_peers(a, &mut out).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipamd: {e}");
            ExitCode::FAILURE
        }
    }
}
