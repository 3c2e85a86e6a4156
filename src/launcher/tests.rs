//! Tests of [`detect`]: each launcher's variables, the precedence among launchers, and the
//! errors for missing, malformed or inconsistent values.

use std::collections::HashMap;

use super::*;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn detect_in(pairs: &[(&str, &str)]) -> Result<Option<LaunchInfo>, LaunchError> {
    detect(env_of(pairs))
}

fn info(rank: u32, size: u32, local: (Option<u32>, Option<u32>), source: Launcher) -> LaunchInfo {
    LaunchInfo {
        rank,
        size,
        local_rank: local.0,
        local_size: local.1,
        source,
    }
}

const OMPI: [(&str, &str); 4] = [
    ("OMPI_COMM_WORLD_RANK", "5"),
    ("OMPI_COMM_WORLD_SIZE", "8"),
    ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
    ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
];

/// What `srun -N 3 -n 7` exports to task 6 (the single task of the third node).
const SLURM: [(&str, &str); 6] = [
    ("SLURM_PROCID", "6"),
    ("SLURM_STEP_NUM_TASKS", "7"),
    ("SLURM_NTASKS", "7"),
    ("SLURM_LOCALID", "0"),
    ("SLURM_NODEID", "2"),
    ("SLURM_STEP_TASKS_PER_NODE", "3(x2),1"),
];

#[test]
fn none_present() {
    assert_eq!(detect_in(&[]), Ok(None));
    assert_eq!(
        detect_in(&[("HOME", "/root"), ("SLURM_JOB_ID", "12")]),
        Ok(None)
    );
}

#[test]
fn open_mpi() {
    let got = detect_in(&OMPI).unwrap().unwrap();
    assert_eq!(got, info(5, 8, (Some(1), Some(4)), Launcher::OpenMpi));
    assert_eq!(got.to_string(), "rank 5 of 8, local 1 of 4 (from Open MPI)");
}

#[test]
fn open_mpi_without_local_variables() {
    let got = detect_in(&OMPI[..2]).unwrap().unwrap();
    assert_eq!(got, info(5, 8, (None, None), Launcher::OpenMpi));
}

#[test]
fn open_mpi_without_size_is_an_error() {
    let err = detect_in(&[("OMPI_COMM_WORLD_RANK", "0")]).unwrap_err();
    assert!(matches!(
        err,
        LaunchError::MissingSize {
            var: "OMPI_COMM_WORLD_RANK",
            ..
        }
    ));
    assert!(err.to_string().contains("OMPI_COMM_WORLD_SIZE"), "{err}");
}

#[test]
fn pmi_from_hydra() {
    let env = [
        ("PMI_RANK", "3"),
        ("PMI_SIZE", "4"),
        ("MPI_LOCALRANKID", "1"),
        ("MPI_LOCALNRANKS", "2"),
    ];
    let got = detect_in(&env).unwrap().unwrap();
    assert_eq!(got, info(3, 4, (Some(1), Some(2)), Launcher::Pmi));
}

#[test]
fn pmi_from_pals() {
    let env = [
        ("PMI_RANK", "3"),
        ("PMI_SIZE", "4"),
        ("PMI_LOCAL_RANK", "0"),
        ("PMI_LOCAL_SIZE", "1"),
    ];
    let got = detect_in(&env).unwrap().unwrap();
    assert_eq!(got, info(3, 4, (Some(0), Some(1)), Launcher::Pmi));
}

#[test]
fn pmi_started_by_srun_takes_slurm_local_values() {
    let mut env = SLURM.to_vec();
    env.extend([("PMI_RANK", "6"), ("PMI_SIZE", "7")]);
    let got = detect_in(&env).unwrap().unwrap();
    assert_eq!(got, info(6, 7, (Some(0), Some(1)), Launcher::Pmi));
}

#[test]
fn pmi_under_hydra_proxy_ignores_slurm_local_values() {
    // Hydra's proxies were started by srun, one per node: Slurm's task 2 of 3
    // is the proxy, not this rank.
    let env = [
        ("PMI_RANK", "5"),
        ("PMI_SIZE", "8"),
        ("SLURM_PROCID", "2"),
        ("SLURM_NTASKS", "3"),
        ("SLURM_LOCALID", "0"),
    ];
    let got = detect_in(&env).unwrap().unwrap();
    assert_eq!(got, info(5, 8, (None, None), Launcher::Pmi));
}

#[test]
fn pmi_with_matching_procid_but_other_size_ignores_slurm() {
    let env = [
        ("PMI_RANK", "0"),
        ("PMI_SIZE", "8"),
        ("SLURM_PROCID", "0"),
        ("SLURM_NTASKS", "2"),
        ("SLURM_LOCALID", "0"),
    ];
    assert_eq!(detect_in(&env).unwrap().unwrap().local_rank, None);
}

#[test]
fn pmi_without_size_is_an_error() {
    let err = detect_in(&[("PMI_RANK", "0")]).unwrap_err();
    assert!(matches!(
        err,
        LaunchError::MissingSize {
            var: "PMI_RANK",
            ..
        }
    ));
}

#[test]
fn pmix_with_pmi_size() {
    let env = [("PMIX_RANK", "2"), ("PMI_SIZE", "4")];
    let got = detect_in(&env).unwrap().unwrap();
    assert_eq!(got, info(2, 4, (None, None), Launcher::Pmix));
}

#[test]
fn pmix_started_by_srun_takes_size_and_locals_from_slurm() {
    let mut env = SLURM.to_vec();
    env.push(("PMIX_RANK", "6"));
    let got = detect_in(&env).unwrap().unwrap();
    assert_eq!(got, info(6, 7, (Some(0), Some(1)), Launcher::Pmix));
}

#[test]
fn pmix_alone_has_no_size() {
    let err = detect_in(&[("PMIX_RANK", "1"), ("PMIX_NAMESPACE", "x")]).unwrap_err();
    assert!(matches!(
        err,
        LaunchError::MissingSize {
            var: "PMIX_RANK",
            ..
        }
    ));
    assert!(err.to_string().contains("explicitly"), "{err}");
}

#[test]
fn pmix_with_other_slurm_procid_has_no_size() {
    let env = [
        ("PMIX_RANK", "1"),
        ("SLURM_PROCID", "0"),
        ("SLURM_NTASKS", "2"),
    ];
    assert!(matches!(
        detect_in(&env),
        Err(LaunchError::MissingSize { .. })
    ));
}

#[test]
fn slurm_step() {
    let got = detect_in(&SLURM).unwrap().unwrap();
    assert_eq!(got, info(6, 7, (Some(0), Some(1)), Launcher::Slurm));
}

#[test]
fn slurm_local_size_follows_node_id() {
    for (node, expected) in [("0", 3), ("1", 3), ("2", 1)] {
        let env = [
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "7"),
            ("SLURM_NODEID", node),
            ("SLURM_TASKS_PER_NODE", "3(x2),1"),
        ];
        assert_eq!(detect_in(&env).unwrap().unwrap().local_size, Some(expected));
    }
}

#[test]
fn slurm_step_list_wins_over_job_list() {
    let env = [
        ("SLURM_PROCID", "0"),
        ("SLURM_NTASKS", "4"),
        ("SLURM_NODEID", "0"),
        ("SLURM_STEP_TASKS_PER_NODE", "2(x2)"),
        ("SLURM_TASKS_PER_NODE", "4"),
    ];
    assert_eq!(detect_in(&env).unwrap().unwrap().local_size, Some(2));
}

#[test]
fn slurm_uniform_list_needs_no_node_id() {
    let env = [
        ("SLURM_PROCID", "0"),
        ("SLURM_NTASKS", "8"),
        ("SLURM_TASKS_PER_NODE", "4(x2)"),
    ];
    assert_eq!(detect_in(&env).unwrap().unwrap().local_size, Some(4));
    let uneven = [
        ("SLURM_PROCID", "0"),
        ("SLURM_NTASKS", "3"),
        ("SLURM_TASKS_PER_NODE", "2,1"),
    ];
    assert_eq!(detect_in(&uneven).unwrap().unwrap().local_size, None);
}

#[test]
fn slurm_ntasks_per_node_fallback_and_unknown_local_size() {
    let env = [
        ("SLURM_PROCID", "1"),
        ("SLURM_NTASKS", "4"),
        ("SLURM_NTASKS_PER_NODE", "2"),
    ];
    assert_eq!(detect_in(&env).unwrap().unwrap().local_size, Some(2));
    let bare = [("SLURM_PROCID", "1"), ("SLURM_NPROCS", "4")];
    assert_eq!(
        detect_in(&bare).unwrap().unwrap(),
        info(1, 4, (None, None), Launcher::Slurm)
    );
}

#[test]
fn slurm_without_size_is_an_error() {
    let err = detect_in(&[("SLURM_PROCID", "0")]).unwrap_err();
    assert!(matches!(
        err,
        LaunchError::MissingSize {
            var: "SLURM_PROCID",
            ..
        }
    ));
}

#[test]
fn precedence_open_mpi_over_everything() {
    let mut env = SLURM.to_vec();
    env.extend(OMPI);
    env.extend([("PMI_RANK", "0"), ("PMI_SIZE", "1"), ("PMIX_RANK", "0")]);
    assert_eq!(detect_in(&env).unwrap().unwrap().source, Launcher::OpenMpi);
}

#[test]
fn precedence_pmi_over_pmix_and_slurm() {
    let mut env = SLURM.to_vec();
    env.extend([("PMI_RANK", "1"), ("PMI_SIZE", "2"), ("PMIX_RANK", "0")]);
    let got = detect_in(&env).unwrap().unwrap();
    assert_eq!((got.source, got.rank, got.size), (Launcher::Pmi, 1, 2));
}

#[test]
fn losing_launchers_are_not_read() {
    let mut env = OMPI.to_vec();
    env.extend([("SLURM_PROCID", "junk"), ("PMI_RANK", "-1")]);
    assert_eq!(detect_in(&env).unwrap().unwrap().source, Launcher::OpenMpi);
}

#[test]
fn malformed_numbers_name_the_variable() {
    for bad in [
        "abc",
        "-1",
        "",
        "+3",
        " 3",
        "3 ",
        "1.0",
        "0x10",
        "4294967296",
    ] {
        let env = [("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", bad)];
        match detect_in(&env) {
            Err(LaunchError::Malformed { var, value, .. }) => {
                assert_eq!((var, value.as_str()), ("OMPI_COMM_WORLD_SIZE", bad));
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn error_messages_are_readable() {
    let err = detect_in(&[("PMI_RANK", "x1"), ("PMI_SIZE", "2")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "launcher variable PMI_RANK=\"x1\" is invalid: expected a non-negative decimal integer"
    );
    let err = detect_in(&[("PMI_RANK", "2"), ("PMI_SIZE", "2")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "launcher variable PMI_RANK=2 must be less than PMI_SIZE=2"
    );
}

#[test]
fn rank_not_below_size() {
    let err = detect_in(&[("SLURM_PROCID", "4"), ("SLURM_NTASKS", "4")]).unwrap_err();
    assert!(matches!(
        err,
        LaunchError::Inconsistent {
            var: "SLURM_PROCID",
            other_var: "SLURM_NTASKS",
            ..
        }
    ));
}

#[test]
fn zero_size() {
    let err = detect_in(&[("PMI_RANK", "0"), ("PMI_SIZE", "0")]).unwrap_err();
    assert!(matches!(
        err,
        LaunchError::Malformed {
            var: "PMI_SIZE",
            ..
        }
    ));
    let env = [
        ("OMPI_COMM_WORLD_RANK", "0"),
        ("OMPI_COMM_WORLD_SIZE", "2"),
        ("OMPI_COMM_WORLD_LOCAL_SIZE", "0"),
    ];
    let err = detect_in(&env).unwrap_err();
    assert!(matches!(
        err,
        LaunchError::Malformed {
            var: "OMPI_COMM_WORLD_LOCAL_SIZE",
            ..
        }
    ));
}

#[test]
fn local_values_inconsistent() {
    let mut env = OMPI.to_vec();
    env[2] = ("OMPI_COMM_WORLD_LOCAL_RANK", "4");
    let err = detect_in(&env).unwrap_err();
    assert!(matches!(
        err,
        LaunchError::Inconsistent {
            var: "OMPI_COMM_WORLD_LOCAL_RANK",
            value: 4,
            ..
        }
    ));
    let mut env = OMPI.to_vec();
    env[3] = ("OMPI_COMM_WORLD_LOCAL_SIZE", "9");
    let err = detect_in(&env).unwrap_err();
    assert!(matches!(
        err,
        LaunchError::Inconsistent {
            rule: "must not exceed",
            ..
        }
    ));
    let env = [
        ("PMI_RANK", "0"),
        ("PMI_SIZE", "2"),
        ("MPI_LOCALRANKID", "2"),
    ];
    let err = detect_in(&env).unwrap_err();
    assert!(matches!(
        err,
        LaunchError::Inconsistent {
            other_var: "PMI_SIZE",
            ..
        }
    ));
}

#[test]
fn malformed_tasks_per_node() {
    for bad in [
        "", "2(x)", "2(3)", "a", "2(x3", "2(x0)", "2,,1", "(x2)", "2(x2)x",
    ] {
        let env = [
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_TASKS_PER_NODE", bad),
        ];
        match detect_in(&env) {
            Err(LaunchError::Malformed {
                var: "SLURM_TASKS_PER_NODE",
                ..
            }) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn node_id_beyond_tasks_per_node_list() {
    let env = [
        ("SLURM_PROCID", "0"),
        ("SLURM_NTASKS", "4"),
        ("SLURM_NODEID", "3"),
        ("SLURM_TASKS_PER_NODE", "2(x2)"),
    ];
    let err = detect_in(&env).unwrap_err();
    assert!(matches!(
        err,
        LaunchError::Inconsistent {
            var: "SLURM_NODEID",
            value: 3,
            other: 2,
            ..
        }
    ));
}

#[test]
fn tasks_per_node_parser() {
    let groups = parse_tasks_per_node("V", "2(x3),1,4(x2)").unwrap();
    let pairs: Vec<_> = groups.iter().map(|g| (g.count, g.nodes)).collect();
    assert_eq!(pairs, [(2, 3), (1, 1), (4, 2)]);
}
