//! `benchfsctl`: the command-line tool of a BenchFS cluster.
//!
//! Cluster commands (`wait`, `status`, `shutdown`) and file commands in the manner of
//! coreutils (`ls`, `stat`, `df`, `mkdir`, `rm`, `mv`), parallel copies in and out (`put`,
//! `get`) and `find`, which also serves as IO500's external find script.
//!
//! The registry directory comes from `--registry` or `BENCHFS_REGISTRY`. A failed operation
//! prints `benchfsctl: <op> <path>: <error>`; the command goes on with its other paths where
//! coreutils would, and exits with status 1.

mod cluster;
mod find;
mod format;
mod ls;
mod namespace;
mod transfer;

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use benchfs::client::{Client, ClientConfig, Error};
use clap::{ArgAction, CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "benchfsctl", version, about = "BenchFS cluster tool")]
struct Cli {
    /// Registry directory of the cluster.
    #[arg(long, env = "BENCHFS_REGISTRY", global = true)]
    registry: Option<PathBuf>,
    /// Number of servers to expect (default: the count the servers published).
    #[arg(long, env = "BENCHFS_SERVERS_EXPECTED", global = true)]
    servers: Option<u32>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Wait until every target of the cluster is up; fail after the timeout.
    Wait {
        /// Seconds to wait at most.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Show targets, their counters and capacity.
    Status,
    /// Stop every server gracefully and wait until they unpublished.
    Shutdown {
        /// Seconds to wait for the servers to go.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// List directories (names sorted); a file is listed itself.
    Ls {
        /// Long format: type and mode, links, size, modification time, name.
        #[arg(short = 'l')]
        long: bool,
        /// List subdirectories recursively.
        #[arg(short = 'R')]
        recursive: bool,
        /// Paths to list (default: the root).
        paths: Vec<String>,
    },
    /// Show the attributes of files and directories.
    Stat {
        /// Paths to show.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Show the capacity and the file count of the cluster.
    #[command(disable_help_flag = true)]
    Df {
        /// Sizes in powers of 1024 (K, M, G, T) instead of bytes.
        #[arg(short = 'h', long = "human-readable")]
        human: bool,
        /// Print help.
        #[arg(long, action = ArgAction::Help)]
        help: Option<bool>,
    },
    /// Make directories.
    Mkdir {
        /// Make missing parents too; existing directories are fine.
        #[arg(short = 'p', long)]
        parents: bool,
        /// Directories to make.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Remove files (and directories with their contents, with -r).
    Rm {
        /// Remove directories and their contents.
        #[arg(short = 'r', short_alias = 'R', long)]
        recursive: bool,
        /// Ignore missing paths.
        #[arg(short = 'f', long)]
        force: bool,
        /// Paths to remove.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Rename SOURCE to DEST, or move sources into the directory DEST.
    Mv {
        /// Sources, then the destination.
        #[arg(required = true, num_args = 2..)]
        paths: Vec<String>,
    },
    /// Copy a local file into BenchFS (the remote parent directory must exist).
    Put {
        /// The local file.
        local: PathBuf,
        /// The BenchFS path (or an existing directory to copy into).
        remote: String,
        #[command(flatten)]
        options: transfer::Options,
    },
    /// Copy a BenchFS file to a local file.
    Get {
        /// The BenchFS file.
        remote: String,
        /// The local path (or an existing directory to copy into).
        local: PathBuf,
        #[command(flatten)]
        options: transfer::Options,
    },
    /// Walk directory trees and print the paths that pass every test, then
    /// `MATCHED <hits>/<examined>`.
    ///
    /// Arguments: [PATH...] [-name GLOB] [-size [+|-]N(c|k|M)] [-newer FILE] [-type f|d].
    /// Paths default to the root; each is tested itself, then everything under it.
    ///
    /// -name: the last component matches the shell pattern GLOB.
    ///
    /// -size: the size in bytes (c), KiB (k) or MiB (M), rounded up, is N, more (+) or
    /// less (-).
    ///
    /// -newer: the modification time is strictly later than FILE's (as GNU find); FILE is
    /// looked up in BenchFS first and, if it is not there, in the local file system (IO500
    /// passes a local timestamp file).
    ///
    /// -type: a regular file (f) or a directory (d).
    #[command(disable_help_flag = true)]
    Find {
        /// Paths, then tests (`--help` prints this text).
        #[arg(allow_hyphen_values = true, trailing_var_arg = true, num_args = 0..)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Find { args } = &cli.command {
        if args.iter().any(|a| a == "--help") {
            let mut command = Cli::command();
            command.build();
            let find = command
                .find_subcommand_mut("find")
                .expect("find is a command");
            let _ = find.print_long_help();
            return ExitCode::SUCCESS;
        }
    }
    let Some(registry) = cli.registry.clone() else {
        eprintln!("benchfsctl: give the registry directory with --registry or BENCHFS_REGISTRY");
        return ExitCode::from(2);
    };
    let result = match cli.command {
        Command::Wait { timeout } => cluster::wait(&registry, cli.servers, timeout),
        Command::Status => cluster::status(&registry, cli.servers),
        Command::Shutdown { timeout } => cluster::shutdown(&registry, cli.servers, timeout),
        command => return file_command(&registry, cli.servers, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchfsctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one of the file commands on a fresh client.
fn file_command(registry: &Path, servers: Option<u32>, command: Command) -> ExitCode {
    let mut ctl = match Ctl::connect(registry, servers) {
        Ok(ctl) => ctl,
        Err(e) => {
            eprintln!("benchfsctl: connect: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::Ls {
            long,
            recursive,
            paths,
        } => ls::ls(&mut ctl, &paths, ls::Options { long, recursive }),
        Command::Stat { paths } => ls::stat(&mut ctl, &paths),
        Command::Df { human, .. } => ls::df(&mut ctl, human),
        Command::Mkdir { parents, paths } => namespace::mkdir(&mut ctl, &paths, parents),
        Command::Rm {
            recursive,
            force,
            paths,
        } => namespace::rm(&mut ctl, &paths, recursive, force),
        Command::Mv { paths } => namespace::mv(&mut ctl, &paths),
        Command::Put {
            local,
            remote,
            options,
        } => transfer::put(&mut ctl, &local, &remote, &options),
        Command::Get {
            remote,
            local,
            options,
        } => transfer::get(&mut ctl, &remote, &local, &options),
        Command::Find { args } => find::find(&mut ctl, &args),
        Command::Wait { .. } | Command::Status | Command::Shutdown { .. } => {
            unreachable!("cluster commands run without a file client")
        }
    }
    if ctl.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// A client of the cluster and whether any operation failed.
#[derive(Debug)]
pub struct Ctl {
    /// The client.
    pub client: Client,
    /// Its settings (workers of parallel copies connect their own clients with them).
    pub config: ClientConfig,
    failed: bool,
}

impl Ctl {
    fn connect(registry: &Path, servers: Option<u32>) -> Result<Ctl, String> {
        let config = client_config(registry, servers)?;
        let client = Client::connect(config.clone()).map_err(|e| e.to_string())?;
        Ok(Ctl {
            client,
            config,
            failed: false,
        })
    }

    /// Reports the failure of `op` on `path` and marks the command failed.
    pub fn fail(&mut self, op: &str, path: impl Display, why: impl Display) {
        eprintln!("benchfsctl: {op} {path}: {why}");
        self.failed = true;
    }
}

/// The client settings of the tool: the environment's, a short connect timeout.
pub fn client_config(registry: &Path, servers: Option<u32>) -> Result<ClientConfig, String> {
    let mut config = ClientConfig::from_env(registry).map_err(|e| e.to_string())?;
    config.expected_servers = servers.or(config.expected_servers);
    config.connect_timeout = Duration::from_secs(5);
    Ok(config)
}

/// What went wrong, as coreutils says it: the text of the errno for answers of the servers.
pub fn why(e: &Error) -> String {
    match e {
        Error::Remote { errno, .. } => strerror(*errno),
        other => other.to_string(),
    }
}

/// The text of `errno` ("No such file or directory").
pub fn strerror(errno: i32) -> String {
    io_why(&std::io::Error::from_raw_os_error(errno))
}

/// The text of a local I/O error without its "(os error N)" tail.
pub fn io_why(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}
