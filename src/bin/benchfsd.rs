//! `benchfsd`: the BenchFS storage server.
//!
//! Start one per node (or per device) by hand, with `mpirun -np N benchfsd ...` or with
//! `srun benchfsd ...`; the rank and server count come from the launcher's environment or from
//! `--rank`/`--servers`. Configuration: `--config FILE` (TOML), `BENCHFS_*` variables and flags,
//! flags winning; `--print-config` shows the result. SIGTERM or SIGINT (or
//! `benchfsctl shutdown`) stops the server gracefully.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use benchfs::config::{self, LogLevel, ServerArgs};
use benchfs::server::process::run_server;
use benchfs::server::Control;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "benchfsd", version, about = "BenchFS storage server")]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    /// Print the effective configuration (TOML) and exit.
    #[arg(long)]
    print_config: bool,
    /// Print the documented defaults as a commented TOML file and exit.
    #[arg(long)]
    print_defaults: bool,
}

static CONTROL: OnceLock<Arc<Control>> = OnceLock::new();

extern "C" fn on_signal(_signal: libc::c_int) {
    if let Some(control) = CONTROL.get() {
        control.request_stop();
    }
}

fn install_signal_handlers() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only reads a OnceLock that is set before this point and calls
        // Control::request_stop, which is async-signal-safe (an atomic store and a write).
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
}

fn level(l: LogLevel) -> log::LevelFilter {
    match l {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_defaults {
        print!("{}", config::default_config_toml());
        return ExitCode::SUCCESS;
    }
    let config = match config::load_from_process(&cli.server) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("benchfsd: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    let tag = match benchfs::server::process::identity(&config) {
        Ok(id) => format!("benchfsd[{}]", id.rank),
        Err(_) => "benchfsd".to_string(),
    };
    benchfs::logging::init(tag, level(config.log_level));
    let control = match Control::new() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            log::error!("cannot create the control eventfd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = CONTROL.set(control.clone());
    install_signal_handlers();
    match run_server(&config, control) {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("failed: {e}");
            ExitCode::FAILURE
        }
    }
}
