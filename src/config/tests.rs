//! Tests of loading the configuration: precedence of the layers, file and environment errors,
//! sizes, validation rules, flags, and the TOML the configuration prints.

use std::collections::HashMap;
use std::io::Write;

use clap::{CommandFactory, Parser};

use super::keys::KEYS;
use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
}

fn args_with_dirs() -> ServerArgs {
    ServerArgs {
        registry_dir: Some("/reg".into()),
        data_dir: Some("/data".into()),
        ..ServerArgs::default()
    }
}

fn load_with(args: &ServerArgs, env: &[(&str, &str)]) -> Result<ServerConfig, ConfigError> {
    let map: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let names: Vec<String> = map.keys().cloned().collect();
    load(args, |name| map.get(name).cloned(), names.into_iter())
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn with_file(file: &tempfile::NamedTempFile) -> ServerArgs {
    ServerArgs {
        config: Some(file.path().to_owned()),
        ..ServerArgs::default()
    }
}

fn invalid(err: ConfigError) -> (&'static str, Origin, String) {
    match err {
        ConfigError::Invalid {
            key,
            origin,
            reason,
            ..
        } => (key, origin, reason),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn defaults() {
    let config = load_with(&args_with_dirs(), &[]).unwrap();
    assert_eq!(config, ServerConfig::new("/reg", "/data"));
    assert_eq!(config.chunk_size_bytes, 4 << 20);
    assert_eq!(config.slab_bytes, 64 << 20);
    assert_eq!(config.shards_per_numa, 1);
    assert_eq!(config.shards, None);
    assert_eq!(config.eager_threshold_bytes, 16 << 10);
    assert_eq!(config.queue_depth, 256);
    assert_eq!(config.request_timeout(), Duration::from_secs(30));
    assert_eq!(config.shutdown_timeout(), Duration::from_secs(10));
    assert_eq!(config.log_level, LogLevel::Info);
    assert_eq!((config.rank, config.servers), (None, None));
    assert_eq!((config.local_rank, config.local_servers), (None, None));
    assert!(config.numa);
}

#[test]
fn file_overrides_defaults() {
    let file = toml_file(
        "registry_dir = \"/f/reg\"\ndata_dir = \"/f/data\"\nchunk_size_bytes = \"1MiB\"\n\
         slab_bytes = 8388608\nshards = 6\nlog_level = \"WARN\"\nnuma = false\n",
    );
    let config = load_with(&with_file(&file), &[]).unwrap();
    assert_eq!(config.registry_dir, PathBuf::from("/f/reg"));
    assert_eq!(config.chunk_size_bytes, 1 << 20);
    assert_eq!(config.slab_bytes, 8 << 20);
    assert_eq!(config.shards, Some(6));
    assert_eq!(config.log_level, LogLevel::Warn);
    assert!(!config.numa);
    assert_eq!(config.queue_depth, DEFAULT_QUEUE_DEPTH);
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let file = toml_file(
        "registry_dir = \"/f/reg\"\ndata_dir = \"/f/data\"\nqueue_depth = 10\n\
         request_timeout_ms = 11\nshutdown_timeout_ms = 12\n",
    );
    let env = [
        ("BENCHFS_DATA_DIR", "/e/data"),
        ("BENCHFS_REQUEST_TIMEOUT_MS", "21"),
        ("BENCHFS_SHUTDOWN_TIMEOUT_MS", "22"),
        ("BENCHFS_NUMA", "on"),
    ];
    let mut args = with_file(&file);
    args.shutdown_timeout_ms = Some(32);
    args.no_numa = true;
    let config = load_with(&args, &env).unwrap();
    assert_eq!(config.registry_dir, PathBuf::from("/f/reg"));
    assert_eq!(config.data_dir, PathBuf::from("/e/data"));
    assert_eq!(config.queue_depth, 10);
    assert_eq!(config.request_timeout_ms, 21);
    assert_eq!(config.shutdown_timeout_ms, 32);
    assert!(!config.numa);
}

#[test]
fn config_file_from_env_and_flag_wins() {
    let from_env = toml_file("registry_dir = \"/env-file\"\ndata_dir = \"/d\"\n");
    let from_flag = toml_file("registry_dir = \"/flag-file\"\ndata_dir = \"/d\"\n");
    let env_path = from_env.path().to_str().unwrap();
    let env = [("BENCHFS_CONFIG", env_path)];
    let config = load_with(&ServerArgs::default(), &env).unwrap();
    assert_eq!(config.registry_dir, PathBuf::from("/env-file"));
    let config = load_with(&with_file(&from_flag), &env).unwrap();
    assert_eq!(config.registry_dir, PathBuf::from("/flag-file"));
}

#[test]
fn missing_file_names_path_and_origin() {
    let env = [("BENCHFS_CONFIG", "/nonexistent/benchfs.toml")];
    let err = load_with(&args_with_dirs(), &env).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConfigError::ReadFile { .. }), "{err:?}");
    assert!(text.contains("/nonexistent/benchfs.toml"), "{text}");
    assert!(text.contains("BENCHFS_CONFIG"), "{text}");
}

#[test]
fn unknown_toml_key_names_key_and_path() {
    let file = toml_file("registry_dir = \"/r\"\nchunk_size = \"4m\"\n");
    let err = load_with(&with_file(&file), &[]).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConfigError::ParseFile { .. }), "{err:?}");
    assert!(text.contains("chunk_size"), "{text}");
    assert!(text.contains(file.path().to_str().unwrap()), "{text}");
}

#[test]
fn bad_toml_values_name_key_and_path() {
    for line in [
        "chunk_size_bytes = \"4x\"",
        "chunk_size_bytes = -1",
        "chunk_size_bytes = 1.5",
        "queue_depth = -3",
        "log_level = \"loud\"",
        "numa = \"yes\"",
    ] {
        let file = toml_file(&format!("data_dir = \"/d\"\n{line}\n"));
        let err = load_with(&with_file(&file), &[]).unwrap_err();
        let text = err.to_string();
        let key = line.split(' ').next().unwrap();
        assert!(text.contains(key), "{line}: {text}");
        assert!(
            text.contains(file.path().to_str().unwrap()),
            "{line}: {text}"
        );
    }
}

#[test]
fn misspelled_env_var_gets_a_hint() {
    let cases = [
        ("BENCHFS_CHUNK_SIZE", Some("BENCHFS_CHUNK_SIZE_BYTES")),
        ("BENCHFS_SLAB_SIZE", Some("BENCHFS_SLAB_BYTES")),
        (
            "BENCHFS_REQUEST_TIMEOUT",
            Some("BENCHFS_REQUEST_TIMEOUT_MS"),
        ),
        ("BENCHFS_DATADIR", Some("BENCHFS_DATA_DIR")),
        ("BENCHFS_LOGLEVEL", Some("BENCHFS_LOG_LEVEL")),
        ("BENCHFS_SERVER", Some("BENCHFS_SERVERS")),
        ("BENCHFS_SERVERS_EXPECTD", Some("BENCHFS_SERVERS_EXPECTED")),
        ("BENCHFS_COLOUR", None),
    ];
    for (name, hint) in cases {
        let err = load_with(&args_with_dirs(), &[(name, "1")]).unwrap_err();
        match &err {
            ConfigError::UnknownEnv {
                name: got,
                suggestion,
            } => {
                assert_eq!(got, name);
                assert_eq!(suggestion.as_deref(), hint, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let err = load_with(&args_with_dirs(), &[("BENCHFS_CHUNK_SIZE", "4m")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown environment variable BENCHFS_CHUNK_SIZE; \
         did you mean BENCHFS_CHUNK_SIZE_BYTES?"
    );
}

#[test]
fn known_and_foreign_env_vars_are_accepted() {
    let env = [
        ("BENCHFS_REGISTRY", "/client/reg"),
        ("BENCHFS_SERVERS_EXPECTED", "4"),
        ("BENCHFS_TIMEOUT_MS", "5"),
        ("BENCHFS_LOG", "debug"),
        ("BENCHFS_TEST_ANYTHING", "x"),
        ("benchfs_chunk_size", "x"),
        ("HOME", "/root"),
    ];
    assert_eq!(
        load_with(&args_with_dirs(), &env).unwrap(),
        ServerConfig::new("/reg", "/data")
    );
}

#[test]
fn every_key_has_an_env_var() {
    let env = [
        ("BENCHFS_REGISTRY_DIR", "/r"),
        ("BENCHFS_DATA_DIR", "/d"),
        ("BENCHFS_CHUNK_SIZE_BYTES", "64k"),
        ("BENCHFS_SLAB_BYTES", "1m"),
        ("BENCHFS_SHARDS_PER_NUMA", "2"),
        ("BENCHFS_SHARDS", "3"),
        ("BENCHFS_EAGER_THRESHOLD_BYTES", "4096"),
        ("BENCHFS_QUEUE_DEPTH", "5"),
        ("BENCHFS_REQUEST_TIMEOUT_MS", "6"),
        ("BENCHFS_SHUTDOWN_TIMEOUT_MS", "7"),
        ("BENCHFS_LOG_LEVEL", "Debug"),
        ("BENCHFS_RANK", "1"),
        ("BENCHFS_SERVERS", "9"),
        ("BENCHFS_LOCAL_RANK", "0"),
        ("BENCHFS_LOCAL_SERVERS", "2"),
        ("BENCHFS_NUMA", "false"),
    ];
    assert_eq!(env.len(), KEYS.len());
    let config = load_with(&ServerArgs::default(), &env).unwrap();
    let expected = ServerConfig {
        chunk_size_bytes: 64 << 10,
        slab_bytes: 1 << 20,
        shards_per_numa: 2,
        shards: Some(3),
        eager_threshold_bytes: 4096,
        queue_depth: 5,
        request_timeout_ms: 6,
        shutdown_timeout_ms: 7,
        log_level: LogLevel::Debug,
        rank: Some(1),
        servers: Some(9),
        local_rank: Some(0),
        local_servers: Some(2),
        numa: false,
        ..ServerConfig::new("/r", "/d")
    };
    assert_eq!(config, expected);
}

#[test]
fn bad_env_values_name_variable() {
    for (var, value) in [
        ("BENCHFS_QUEUE_DEPTH", "abc"),
        ("BENCHFS_QUEUE_DEPTH", "-1"),
        ("BENCHFS_QUEUE_DEPTH", "4294967296"),
        ("BENCHFS_CHUNK_SIZE_BYTES", "4x"),
        ("BENCHFS_NUMA", "maybe"),
        ("BENCHFS_LOG_LEVEL", "trace"),
        ("BENCHFS_DATA_DIR", ""),
    ] {
        let err = load_with(&args_with_dirs(), &[(var, value)]).unwrap_err();
        match &err {
            ConfigError::BadValue {
                origin, value: got, ..
            } => {
                assert_eq!(origin, &Origin::Env(var.to_owned()));
                assert_eq!(got, value);
            }
            other => panic!("{var}={value}: {other:?}"),
        }
        assert!(err.to_string().contains(var), "{err}");
    }
}

#[test]
fn size_parsing() {
    let good = [
        ("4096", 4096),
        ("0", 0),
        ("64k", 64 << 10),
        ("64K", 64 << 10),
        ("64KiB", 64 << 10),
        ("4m", 4 << 20),
        ("4M", 4 << 20),
        ("4MiB", 4 << 20),
        ("4mib", 4 << 20),
        ("4 MiB", 4 << 20),
        (" 1g ", 1 << 30),
        ("1G", 1 << 30),
        ("2t", 2 << 40),
        ("512b", 512),
        ("18446744073709551615", u64::MAX),
    ];
    for (text, bytes) in good {
        assert_eq!(parse_size(text), Ok(bytes), "{text:?}");
    }
    let bad = [
        ("", SizeError::Empty),
        ("   ", SizeError::Empty),
        ("-1", SizeError::Negative),
        ("4x", SizeError::UnknownUnit("x".into())),
        ("4MB", SizeError::UnknownUnit("MB".into())),
        ("4kb", SizeError::UnknownUnit("kb".into())),
        ("m", SizeError::NotANumber("m".into())),
        ("+4", SizeError::NotANumber("+4".into())),
        ("1.5m", SizeError::NotANumber("1.5m".into())),
        ("4_096", SizeError::NotANumber("4_096".into())),
        (
            "18446744073709551616",
            SizeError::Overflow("18446744073709551616".into()),
        ),
        ("16777216T", SizeError::Overflow("16777216T".into())),
    ];
    for (text, err) in bad {
        assert_eq!(parse_size(text), Err(err), "{text:?}");
    }
}

#[test]
fn size_formatting_round_trips() {
    for bytes in [
        0,
        1,
        4095,
        4096,
        4 << 20,
        3 << 30,
        5 << 40,
        (1 << 20) + 4096,
        u64::MAX,
    ] {
        assert_eq!(parse_size(&format_size(bytes)), Ok(bytes), "{bytes}");
    }
    assert_eq!(format_size(4 << 20), "4MiB");
    assert_eq!(format_size((1 << 20) + 4096), "1028KiB");
    assert_eq!(format_size(4097), "4097");
}

#[test]
fn validation_names_key_and_origin() {
    let (key, origin, reason) =
        invalid(load_with(&args_with_dirs(), &[("BENCHFS_CHUNK_SIZE_BYTES", "5000")]).unwrap_err());
    assert_eq!(key, "chunk_size_bytes");
    assert_eq!(origin, Origin::Env("BENCHFS_CHUNK_SIZE_BYTES".into()));
    assert!(reason.contains("multiple of 4KiB"), "{reason}");

    let file = toml_file("registry_dir = \"/r\"\ndata_dir = \"/d\"\nslab_bytes = \"1m\"\n");
    let err = load_with(&with_file(&file), &[]).unwrap_err();
    let text = err.to_string();
    let (key, origin, reason) = invalid(err);
    assert_eq!(
        (key, origin),
        ("slab_bytes", Origin::File(file.path().to_owned()))
    );
    assert!(reason.contains("at least one chunk"), "{reason}");
    assert!(text.contains(file.path().to_str().unwrap()), "{text}");

    let mut args = args_with_dirs();
    args.slab_size = Some(6 << 20);
    let err = load_with(&args, &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "slab_bytes = \"6MiB\" (from flag --slab-size) is invalid: \
         must be a multiple of chunk_size_bytes (4MiB)"
    );
}

#[test]
fn validation_rules() {
    type Edit = fn(&mut ServerArgs);
    let cases: [(Edit, &str); 14] = [
        (|a| a.chunk_size = Some(0), "chunk_size_bytes"),
        (|a| a.chunk_size = Some(2 << 30), "chunk_size_bytes"),
        (|a| a.chunk_size = Some(6144), "chunk_size_bytes"),
        (|a| a.slab_size = Some(2 << 40), "slab_bytes"),
        (
            |a| a.eager_threshold = Some(8 << 20),
            "eager_threshold_bytes",
        ),
        (|a| a.shards_per_numa = Some(0), "shards_per_numa"),
        (|a| a.shards = Some(0), "shards"),
        (|a| a.queue_depth = Some(0), "queue_depth"),
        (|a| a.request_timeout_ms = Some(0), "request_timeout_ms"),
        (
            |a| a.shutdown_timeout_ms = Some(MAX_TIMEOUT_MS + 1),
            "shutdown_timeout_ms",
        ),
        (|a| a.rank = Some(4), "rank"),
        (|a| a.local_rank = Some(2), "local_rank"),
        (|a| a.local_servers = Some(5), "local_servers"),
        (|a| a.data_dir = Some(PathBuf::new()), "data_dir"),
    ];
    for (edit, expected) in cases {
        let mut args = args_with_dirs();
        args.servers = Some(4);
        args.local_servers = Some(2);
        edit(&mut args);
        let (key, origin, _) = invalid(load_with(&args, &[]).unwrap_err());
        assert_eq!(key, expected);
        assert!(matches!(origin, Origin::Flag(_)), "{origin:?}");
    }
}

#[test]
fn valid_edges_are_accepted() {
    let mut args = args_with_dirs();
    args.chunk_size = Some(4096);
    args.slab_size = Some(4096);
    args.eager_threshold = Some(0);
    args.rank = Some(3);
    args.servers = Some(4);
    args.local_rank = Some(3);
    args.local_servers = Some(4);
    args.request_timeout_ms = Some(MAX_TIMEOUT_MS);
    assert!(load_with(&args, &[]).is_ok());
    args.chunk_size = Some(1 << 30);
    args.slab_size = Some(1 << 40);
    assert!(load_with(&args, &[]).is_ok());
}

#[test]
fn missing_required_dirs() {
    let err = load_with(&ServerArgs::default(), &[("BENCHFS_DATA_DIR", "/d")]).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Missing {
                key: "registry_dir",
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("BENCHFS_REGISTRY_DIR") && text.contains("--registry-dir"));

    let env = [("BENCHFS_REGISTRY_DIR", "/r")];
    let err = load_with(&ServerArgs::default(), &env).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Missing {
                key: "data_dir",
                ..
            }
        ),
        "{err:?}"
    );

    let env = [("BENCHFS_REGISTRY", "/r"), ("BENCHFS_DATA_DIR", "/d")];
    let err = load_with(&ServerArgs::default(), &env).unwrap_err();
    assert!(err.to_string().contains("BENCHFS_REGISTRY is set"), "{err}");
}

#[test]
fn flags_parse_with_clap() {
    Cli::command().debug_assert();
    let cli = Cli::try_parse_from([
        "benchfsd",
        "--registry-dir=/r",
        "--data-dir",
        "/d",
        "--chunk-size",
        "8m",
        "--slab-size=128MiB",
        "--eager-threshold",
        "4096",
        "--log-level",
        "DEBUG",
        "--servers",
        "2",
        "--no-numa",
    ])
    .unwrap();
    let config = load_with(&cli.server, &[]).unwrap();
    assert_eq!(config.chunk_size_bytes, 8 << 20);
    assert_eq!(config.slab_bytes, 128 << 20);
    assert_eq!(config.eager_threshold_bytes, 4096);
    assert_eq!(config.log_level, LogLevel::Debug);
    assert_eq!(config.servers, Some(2));
    assert!(!config.numa);

    let err = Cli::try_parse_from(["benchfsd", "--chunk-size", "4x"]).unwrap_err();
    assert!(err.to_string().contains("--chunk-size"), "{err}");
}

#[test]
fn to_toml_round_trips() {
    let config = ServerConfig {
        chunk_size_bytes: 1 << 20,
        slab_bytes: (1 << 20) * 3,
        shards: Some(5),
        eager_threshold_bytes: 0,
        log_level: LogLevel::Error,
        rank: Some(2),
        servers: Some(3),
        numa: false,
        ..ServerConfig::new("/r e g", "/d\"quoted\"")
    };
    let text = config.to_toml();
    assert!(text.contains("chunk_size_bytes = \"1MiB\"\n"), "{text}");
    assert!(!text.contains("local_rank"), "{text}");
    assert_eq!(text, config.to_string());
    let file = toml_file(&text);
    assert_eq!(load_with(&with_file(&file), &[]).unwrap(), config);
}

#[test]
fn documented_defaults_load_back() {
    let doc = default_config_toml();
    let uncommented: String = doc
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| Key::all().any(|key| line.starts_with(&format!("{} = ", key.name()))))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(uncommented.lines().count(), KEYS.len(), "{doc}");
    let file = toml_file(&uncommented);
    let config = load_with(&with_file(&file), &[]).unwrap();
    let expected = ServerConfig {
        shards: Some(8),
        rank: Some(0),
        servers: Some(4),
        local_rank: Some(0),
        local_servers: Some(1),
        ..ServerConfig::new("/shared/benchfs/registry", "/local/benchfs/data")
    };
    assert_eq!(config, expected);
    assert!(doc.contains("# chunk_size_bytes = \"4MiB\"\n"), "{doc}");
    let line = "environment: BENCHFS_EAGER_THRESHOLD_BYTES, flag: --eager-threshold";
    assert!(doc.contains(line), "{doc}");
}

#[test]
fn key_table_matches_key_order() {
    for (index, spec) in KEYS.iter().enumerate() {
        assert_eq!(spec.key as usize, index, "{}", spec.name);
    }
}

#[test]
fn log_level_names() {
    for level in [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
    ] {
        assert_eq!(level.as_str().parse::<LogLevel>(), Ok(level));
        assert_eq!(
            level.to_string().to_uppercase().parse::<LogLevel>(),
            Ok(level)
        );
    }
    assert!("verbose".parse::<LogLevel>().is_err());
}
