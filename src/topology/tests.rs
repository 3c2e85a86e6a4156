//! Tests of discovery (synthetic and XML machines, NICs under a fake sysfs), of [`plan`],
//! of thread binding and of CPU list formatting.

use super::*;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn synthetic(description: &str) -> Machine {
    load_machine(TopologySource::Synthetic(description)).expect("synthetic topology loads")
}

fn request(shards_per_numa: usize, local_rank: usize, local_servers: usize) -> PlanRequest {
    PlanRequest {
        shards_per_numa,
        local_rank,
        local_servers,
        shard_count: None,
    }
}

/// A node whose `cores` cores each have `threads` PUs, numbered from `first_cpu`.
fn node(os_index: u32, first_cpu: u32, cores: u32, threads: u32) -> NumaNode {
    let cores = (0..cores)
        .map(|core| {
            let base = first_cpu + core * threads;
            (base..base + threads).collect()
        })
        .collect();
    NumaNode { os_index, cores }
}

fn node_of(machine: &Machine, os_index: u32) -> &NumaNode {
    machine
        .numa_nodes
        .iter()
        .find(|node| node.os_index == os_index)
        .expect("shard refers to an existing node")
}

/// Checks the plan invariants and returns every CPU the plan uses.
fn check_invariants(machine: &Machine, plan: &ShardPlan) -> BTreeSet<u32> {
    let mut used = BTreeSet::new();
    for (position, shard) in plan.shards.iter().enumerate() {
        assert_eq!(shard.index, position);
        assert!(!shard.cpus.is_empty(), "shard {position} has no cpus");
        let node_cpus = node_of(machine, shard.numa_node).cpus();
        for cpu in &shard.cpus {
            assert!(
                node_cpus.contains(cpu),
                "cpu {cpu} outside node {}",
                shard.numa_node
            );
            assert!(used.insert(*cpu), "cpu {cpu} given to two shards");
        }
    }
    let nodes: Vec<u32> = plan.shards.iter().map(|shard| shard.numa_node).collect();
    assert!(
        nodes.windows(2).all(|pair| pair[0] <= pair[1]),
        "shards not in node order"
    );
    used
}

fn all_cpus(machine: &Machine) -> BTreeSet<u32> {
    machine.numa_nodes.iter().flat_map(NumaNode::cpus).collect()
}

fn shard_nodes(plan: &ShardPlan) -> Vec<u32> {
    plan.shards.iter().map(|shard| shard.numa_node).collect()
}

fn shard_sizes(plan: &ShardPlan) -> Vec<usize> {
    plan.shards.iter().map(|shard| shard.cpus.len()).collect()
}

#[test]
fn synthetic_two_numa_nodes() {
    let machine = synthetic("pack:2 [numa] core:4 pu:2");
    assert_eq!(machine.numa_nodes.len(), 2);
    assert_eq!(machine.numa_nodes[0].cores.len(), 4);
    assert_eq!(machine.numa_nodes[0].cores[0], vec![0, 1]);
    assert_eq!(machine.numa_nodes[1].cpus(), (8..16).collect::<Vec<u32>>());

    let plan = plan(&machine, &PlanRequest::default()).unwrap();
    assert_eq!(shard_nodes(&plan), vec![0, 1]);
    assert_eq!(check_invariants(&machine, &plan), all_cpus(&machine));

    let plan = super::plan(&machine, &request(2, 0, 1)).unwrap();
    assert_eq!(shard_nodes(&plan), vec![0, 0, 1, 1]);
    assert_eq!(plan.shards[0].cpus, vec![0, 1, 2, 3]);
    assert_eq!(check_invariants(&machine, &plan), all_cpus(&machine));
}

#[test]
fn synthetic_four_numa_nodes() {
    let machine = synthetic("pack:2 group:2 [numa] core:3 pu:2");
    assert_eq!(machine.numa_nodes.len(), 4);
    let plan = plan(&machine, &request(3, 0, 1)).unwrap();
    assert_eq!(plan.shards.len(), 12);
    assert_eq!(shard_nodes(&plan), vec![0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
    assert!(shard_sizes(&plan).iter().all(|&size| size == 2));
    assert_eq!(check_invariants(&machine, &plan), all_cpus(&machine));
}

#[test]
fn synthetic_without_numa_is_one_node() {
    let machine = synthetic("pack:2 core:2 pu:2");
    assert_eq!(machine.numa_nodes.len(), 1);
    assert_eq!(machine.numa_nodes[0].cpus(), (0..8).collect::<Vec<u32>>());
    assert_eq!(machine.numa_nodes[0].cores.len(), 4);
}

/// hwloc XML with one package and NUMA node per entry of `cores_per_node`, one PU per core.
fn uneven_xml(cores_per_node: &[u32]) -> String {
    let sets = |cpus: u64, nodes: u64| {
        format!(
            "cpuset=\"0x{cpus:x}\" complete_cpuset=\"0x{cpus:x}\" \
             nodeset=\"0x{nodes:x}\" complete_nodeset=\"0x{nodes:x}\""
        )
    };
    let total: u32 = cores_per_node.iter().sum();
    let all_nodes = (1u64 << cores_per_node.len()) - 1;
    let mut body = String::new();
    let mut cpu = 0;
    for (index, &cores) in cores_per_node.iter().enumerate() {
        let node_cpus = ((1u64 << cores) - 1) << cpu;
        let own = sets(node_cpus, 1 << index);
        body += &format!("<object type=\"Package\" os_index=\"{index}\" {own}>");
        body += &format!("<object type=\"NUMANode\" os_index=\"{index}\" {own}/>");
        for _ in 0..cores {
            let core = sets(1 << cpu, 1 << index);
            body += &format!("<object type=\"Core\" os_index=\"{cpu}\" {core}>");
            body += &format!("<object type=\"PU\" os_index=\"{cpu}\" {core}/></object>");
            cpu += 1;
        }
        body += "</object>";
    }
    let machine = sets((1u64 << total) - 1, all_nodes);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<topology version=\"2.0\">\
         <object type=\"Machine\" os_index=\"0\" {machine} \
         allowed_cpuset=\"0x{:x}\" allowed_nodeset=\"0x{all_nodes:x}\">{body}</object>\
         </topology>\n",
        (1u64 << total) - 1
    )
}

#[test]
fn xml_with_uneven_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uneven.xml");
    fs::write(&path, uneven_xml(&[3, 2])).unwrap();
    let machine = load_machine(TopologySource::XmlFile(&path)).unwrap();
    assert_eq!(machine.numa_nodes.len(), 2);
    assert_eq!(machine.numa_nodes[0].cpus(), vec![0, 1, 2]);
    assert_eq!(machine.numa_nodes[1].cpus(), vec![3, 4]);

    let plan = plan(&machine, &request(2, 0, 1)).unwrap();
    assert_eq!(shard_nodes(&plan), vec![0, 0, 1, 1]);
    assert_eq!(shard_sizes(&plan), vec![2, 1, 1, 1]);
    assert_eq!(check_invariants(&machine, &plan), all_cpus(&machine));

    let error = super::plan(&machine, &request(3, 0, 1)).unwrap_err();
    assert_eq!(
        error,
        PlanError::TooManyShards {
            numa_node: 1,
            shards: 3,
            cores: 2
        }
    );
}

#[test]
fn uneven_core_split_by_hand() {
    let machine = Machine {
        numa_nodes: vec![node(0, 0, 5, 2), node(1, 10, 7, 1)],
        nics: Vec::new(),
    };
    let plan = plan(&machine, &request(2, 0, 1)).unwrap();
    assert_eq!(shard_nodes(&plan), vec![0, 0, 1, 1]);
    assert_eq!(shard_sizes(&plan), vec![6, 4, 4, 3]);
    assert_eq!(plan.shards[0].cpus, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(plan.shards[3].cpus, vec![14, 15, 16]);
    assert_eq!(check_invariants(&machine, &plan), all_cpus(&machine));
}

#[test]
fn shard_count_override_spreads_over_nodes() {
    let machine = synthetic("pack:2 [numa] core:4 pu:1");
    let request = PlanRequest {
        shard_count: Some(3),
        ..PlanRequest::default()
    };
    let plan = plan(&machine, &request).unwrap();
    assert_eq!(shard_nodes(&plan), vec![0, 0, 1]);
    assert_eq!(shard_sizes(&plan), vec![2, 2, 4]);
    check_invariants(&machine, &plan);
}

#[test]
fn two_servers_on_two_nodes_get_one_node_each() {
    let machine = synthetic("pack:2 [numa] core:4 pu:2");
    for rank in 0..2 {
        let plan = plan(&machine, &request(1, rank, 2)).unwrap();
        assert_eq!(shard_nodes(&plan), vec![rank as u32]);
        let used = check_invariants(&machine, &plan);
        let node_cpus: BTreeSet<u32> = machine.numa_nodes[rank].cpus().into_iter().collect();
        assert_eq!(used, node_cpus);
    }
}

#[test]
fn three_servers_on_two_nodes_split_cores() {
    let machine = synthetic("pack:2 [numa] core:4 pu:2");
    let mut used = BTreeSet::new();
    let mut nodes = Vec::new();
    for rank in 0..3 {
        let plan = plan(&machine, &request(1, rank, 3)).unwrap();
        let cpus = check_invariants(&machine, &plan);
        assert!(used.is_disjoint(&cpus), "server {rank} shares a cpu");
        used.extend(cpus);
        nodes.extend(shard_nodes(&plan));
    }
    assert_eq!(nodes, vec![0, 0, 1]);
    assert_eq!(used, all_cpus(&machine));
}

#[test]
fn servers_share_cores_only_when_unavoidable() {
    let machine = Machine {
        numa_nodes: vec![node(0, 0, 2, 1)],
        nics: Vec::new(),
    };
    let cpus: Vec<Vec<u32>> = (0..3)
        .map(|rank| {
            plan(&machine, &request(1, rank, 3)).unwrap().shards[0]
                .cpus
                .clone()
        })
        .collect();
    assert_eq!(cpus, vec![vec![0], vec![1], vec![0]]);
}

/// Adds `class/infiniband/<device>` with the given NUMA node and `(port, state)` entries.
fn fake_device(root: &Path, device: &str, numa_node: &str, ports: &[(u32, &str)]) {
    let dir = root.join("class/infiniband").join(device);
    fs::create_dir_all(dir.join("device")).unwrap();
    fs::write(dir.join("device/numa_node"), format!("{numa_node}\n")).unwrap();
    for (port, state) in ports {
        let port_dir: PathBuf = dir.join("ports").join(port.to_string());
        fs::create_dir_all(&port_dir).unwrap();
        fs::write(port_dir.join("state"), format!("{state}\n")).unwrap();
    }
}

fn nic(name: &str, numa_node: Option<u32>) -> Nic {
    Nic {
        name: name.to_owned(),
        numa_node,
    }
}

fn shard_nics(plan: &ShardPlan) -> Vec<Option<&str>> {
    plan.shards
        .iter()
        .map(|shard| shard.nic.as_deref())
        .collect()
}

#[test]
fn nics_follow_their_numa_node() {
    let root = tempfile::tempdir().unwrap();
    fake_device(
        root.path(),
        "mlx5_1",
        "1",
        &[(1, "4: ACTIVE"), (2, "1: DOWN")],
    );
    fake_device(root.path(), "mlx5_0", "0", &[(1, "4: ACTIVE")]);
    let nics = nics_from_sysfs(root.path());
    assert_eq!(
        nics,
        vec![nic("mlx5_0:1", Some(0)), nic("mlx5_1:1", Some(1))]
    );

    let mut machine = synthetic("pack:2 [numa] core:4 pu:2");
    machine.nics = nics;
    let plan = plan(&machine, &request(2, 0, 1)).unwrap();
    let expected = ["mlx5_0:1", "mlx5_0:1", "mlx5_1:1", "mlx5_1:1"];
    assert_eq!(shard_nics(&plan), expected.map(Some).to_vec());
    assert!(describe(&plan).contains("#3 numa 1 cpus 12-15 nic mlx5_1:1"));
}

#[test]
fn nics_on_one_node_are_shared_round_robin() {
    let mut machine = synthetic("pack:2 [numa] core:4 pu:1");
    machine.nics = vec![nic("mlx5_0:1", Some(0)), nic("mlx5_1:1", Some(0))];
    let plan = plan(&machine, &request(2, 0, 1)).unwrap();
    let expected = ["mlx5_0:1", "mlx5_1:1", "mlx5_0:1", "mlx5_1:1"];
    assert_eq!(shard_nics(&plan), expected.map(Some).to_vec());
}

#[test]
fn nic_without_numa_node_serves_every_shard() {
    let root = tempfile::tempdir().unwrap();
    fake_device(root.path(), "mlx5_0", "-1", &[(1, "4: ACTIVE")]);
    let mut machine = synthetic("pack:2 [numa] core:4 pu:2");
    machine.nics = nics_from_sysfs(root.path());
    assert_eq!(machine.nics, vec![nic("mlx5_0:1", None)]);
    let plan = plan(&machine, &PlanRequest::default()).unwrap();
    assert_eq!(shard_nics(&plan), vec![Some("mlx5_0:1"); 2]);
}

#[test]
fn no_nics() {
    let root = tempfile::tempdir().unwrap();
    assert!(nics_from_sysfs(root.path()).is_empty());
    let machine = synthetic("pack:2 [numa] core:4 pu:2");
    let plan = plan(&machine, &PlanRequest::default()).unwrap();
    assert_eq!(shard_nics(&plan), vec![None, None]);
    assert!(describe(&plan).starts_with("2 shards: #0 numa 0 cpus 0-7 nic none; #1"));
}

#[test]
fn discover_finds_this_machine() {
    let machine = discover().unwrap();
    assert!(!machine.numa_nodes.is_empty());
    assert!(!machine.numa_nodes[0].cpus().is_empty());
    let plan = plan(&machine, &PlanRequest::default()).unwrap();
    assert_eq!(check_invariants(&machine, &plan), all_cpus(&machine));
}

#[test]
fn bind_current_thread_sets_affinity() {
    let machine = discover().unwrap();
    let cpu = machine.numa_nodes[0].cpus()[0];
    let allowed = std::thread::spawn(move || {
        bind_current_thread(&[cpu]).unwrap();
        let status = fs::read_to_string("/proc/thread-self/status").unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .map(|list| list.trim().to_owned())
    })
    .join()
    .unwrap();
    assert_eq!(allowed, Some(cpu.to_string()));
    let error = bind_current_thread(&[]).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn invalid_requests_are_rejected() {
    let machine = synthetic("pack:2 [numa] core:2 pu:1");
    let error = |request: PlanRequest| plan(&machine, &request).unwrap_err();
    assert_eq!(error(request(0, 0, 1)), PlanError::NoShards);
    let zero_override = PlanRequest {
        shard_count: Some(0),
        ..PlanRequest::default()
    };
    assert_eq!(error(zero_override), PlanError::NoShards);
    assert_eq!(error(request(1, 0, 0)), PlanError::NoServers);
    let out_of_range = error(request(1, 2, 2));
    assert_eq!(
        out_of_range.to_string(),
        "local rank 2 is out of range for 2 servers on the node"
    );
    assert!(matches!(
        error(request(3, 0, 1)),
        PlanError::TooManyShards { .. }
    ));
    assert!(matches!(
        error(request(2, 1, 3)),
        PlanError::TooManyShards { .. }
    ));
    let empty = plan(&Machine::default(), &PlanRequest::default());
    assert_eq!(empty, Err(PlanError::NoCpus));
}

#[test]
fn invalid_topology_sources_are_rejected() {
    let bad = load_machine(TopologySource::Synthetic("bogus:3"));
    assert!(matches!(bad, Err(TopologyError::Rejected { .. })));
    let nul = load_machine(TopologySource::Synthetic("pack:2\0"));
    assert!(matches!(nul, Err(TopologyError::Rejected { .. })));
    let missing = load_machine(TopologySource::XmlFile(Path::new("/nonexistent.xml")));
    assert!(matches!(missing, Err(TopologyError::Rejected { .. })));
}

#[test]
fn cpu_lists_are_compressed() {
    assert_eq!(cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
    assert_eq!(cpu_list(&[]), "");
}
