//! A model-based test of the namespace: seeded random walks of operations (mkdir, rmdir,
//! create, unlink, rename of files and directories, truncate, write, readdir, stat) over the
//! paths made of the names `a`, `b`, `c` up to depth 3, applied to a cluster (2 servers x 2
//! shards, one client, files of 8 KiB chunks so small files span several targets) and to an
//! in-memory model of POSIX semantics. After every step the results must agree (the value, or
//! an errno POSIX allows for the case); every few steps, and at the end, the whole tree must
//! agree: names and kinds by readdir, nlink of directories, size and content of files.
//!
//! Where several errors apply POSIX lets the call return any of them, so the model answers
//! with the set of allowed errnos. A path through a file (`/f/x` with `/f` a file) may fail
//! with `ENOENT` as well as `ENOTDIR` here; `namespace.rs` checks the stricter answer.
//!
//! `NS_MODEL_SEED` runs one seed instead of the fixed ones, `NS_MODEL_STEPS` sets
//! the number of steps.

mod common;
#[path = "common/tree.rs"]
mod tree;

use std::collections::BTreeMap;

use benchfs::client::{Client, EntryKind, OpenFlags};
use common::{Cluster, Options, Transport};
use tree::{diff, pattern, read_file, walk, Rng};

const CHUNK: u64 = 8192;
const MAX_SIZE: u64 = 5 * CHUNK;
const STEPS: usize = 800;
const CHECK_EVERY: usize = 10;
const NAMES: [&str; 3] = ["a", "b", "c"];
const HISTORY: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Op {
    Mkdir(String),
    Rmdir(String),
    Create(String),
    Unlink(String),
    Rename(String, String),
    Truncate(String, u64),
    /// Path, offset, length and seed of the data.
    Write(String, u64, usize, u64),
    Readdir(String),
    Stat(String),
}

impl Op {
    /// The kind of operation (renames of directories told apart, before they happen).
    fn name(&self, model: &Model) -> &'static str {
        match self {
            Op::Mkdir(_) => "mkdir",
            Op::Rmdir(_) => "rmdir",
            Op::Create(_) => "create",
            Op::Unlink(_) => "unlink",
            Op::Rename(from, _) if model.is_dir(from) => "rename-dir",
            Op::Rename(..) => "rename",
            Op::Truncate(..) => "truncate",
            Op::Write(..) => "write",
            Op::Readdir(_) => "readdir",
            Op::Stat(_) => "stat",
        }
    }
}

/// What an operation returns besides success.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Done,
    /// Names and whether each is a directory, in name order.
    Entries(Vec<(String, bool)>),
    /// Kind, size (0 for directories, whose size POSIX leaves open) and link count.
    Stat {
        dir: bool,
        size: u64,
        nlink: u32,
    },
}

type ModelResult = Result<Value, Vec<i32>>;

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => panic!("{path} is not absolute"),
    }
}

/// The directories above `path` that resolving it walks through, top first (not the root).
fn ancestors(path: &str) -> Vec<&str> {
    let mut above = Vec::new();
    let mut at = parent(path);
    while at != "/" {
        above.push(at);
        at = parent(at);
    }
    above.reverse();
    above
}

fn is_under(path: &str, dir: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

/// The file system as POSIX describes it.
#[derive(Debug)]
struct Model {
    nodes: BTreeMap<String, Node>,
}

impl Model {
    fn new() -> Model {
        Model {
            nodes: BTreeMap::from([("/".to_string(), Node::Dir)]),
        }
    }

    fn node(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    fn is_dir(&self, path: &str) -> bool {
        self.node(path) == Some(&Node::Dir)
    }

    fn children(&self, dir: &str) -> Vec<(String, bool)> {
        let under = self.nodes.keys().filter(|p| *p != "/" && parent(p) == dir);
        under
            .map(|p| (p[p.rfind('/').unwrap() + 1..].to_string(), self.is_dir(p)))
            .collect()
    }

    fn nlink(&self, path: &str) -> u32 {
        match self.node(path) {
            Some(Node::Dir) => 2 + self.children(path).iter().filter(|c| c.1).count() as u32,
            _ => 1,
        }
    }

    /// Errors of resolving the directories above `path`.
    fn prefix_errors(&self, path: &str) -> Vec<i32> {
        for dir in ancestors(path) {
            match self.node(dir) {
                None => return vec![libc::ENOENT],
                Some(Node::File(_)) => return vec![libc::ENOTDIR, libc::ENOENT],
                Some(Node::Dir) => {}
            }
        }
        Vec::new()
    }

    fn check_prefix(&self, path: &str) -> Result<(), Vec<i32>> {
        let errors = self.prefix_errors(path);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// `path` resolved to its node, or the errors of a missing one.
    fn existing(&self, path: &str) -> Result<&Node, Vec<i32>> {
        self.check_prefix(path)?;
        self.node(path).ok_or_else(|| vec![libc::ENOENT])
    }

    fn file_mut(&mut self, path: &str) -> Result<&mut Vec<u8>, Vec<i32>> {
        if self.existing(path)? == &Node::Dir {
            return Err(vec![libc::EISDIR]);
        }
        match self.nodes.get_mut(path) {
            Some(Node::File(data)) => Ok(data),
            _ => unreachable!("checked above"),
        }
    }

    fn apply(&mut self, op: &Op) -> ModelResult {
        match op {
            Op::Mkdir(p) => self.mkdir(p),
            Op::Rmdir(p) => self.rmdir(p),
            Op::Create(p) => self.create(p),
            Op::Unlink(p) => self.unlink(p),
            Op::Rename(from, to) => self.rename(from, to),
            Op::Truncate(p, size) => {
                self.file_mut(p)?.resize(*size as usize, 0);
                Ok(Value::Done)
            }
            Op::Write(p, offset, len, seed) => {
                let data = self.file_mut(p)?;
                let end = *offset as usize + len;
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[*offset as usize..end].copy_from_slice(&pattern(*seed, *len));
                Ok(Value::Done)
            }
            Op::Readdir(p) => match self.existing(p)? {
                Node::Dir => Ok(Value::Entries(self.children(p))),
                Node::File(_) => Err(vec![libc::ENOTDIR]),
            },
            Op::Stat(p) => self.stat(p),
        }
    }

    fn stat(&self, path: &str) -> ModelResult {
        let (dir, size) = match self.existing(path)? {
            Node::Dir => (true, 0),
            Node::File(data) => (false, data.len() as u64),
        };
        let nlink = self.nlink(path);
        Ok(Value::Stat { dir, size, nlink })
    }

    fn mkdir(&mut self, path: &str) -> ModelResult {
        self.check_prefix(path)?;
        if self.node(path).is_some() {
            return Err(vec![libc::EEXIST]);
        }
        self.nodes.insert(path.to_string(), Node::Dir);
        Ok(Value::Done)
    }

    fn rmdir(&mut self, path: &str) -> ModelResult {
        match self.existing(path)? {
            Node::File(_) => Err(vec![libc::ENOTDIR]),
            Node::Dir if !self.children(path).is_empty() => {
                Err(vec![libc::ENOTEMPTY, libc::EEXIST])
            }
            Node::Dir => {
                self.nodes.remove(path);
                Ok(Value::Done)
            }
        }
    }

    /// Opening with `O_CREAT`: an existing file is opened as it is.
    fn create(&mut self, path: &str) -> ModelResult {
        self.check_prefix(path)?;
        match self.node(path) {
            Some(Node::Dir) => Err(vec![libc::EISDIR]),
            Some(Node::File(_)) => Ok(Value::Done),
            None => {
                self.nodes.insert(path.to_string(), Node::File(Vec::new()));
                Ok(Value::Done)
            }
        }
    }

    fn unlink(&mut self, path: &str) -> ModelResult {
        match self.existing(path)? {
            Node::Dir => Err(vec![libc::EISDIR, libc::EPERM]),
            Node::File(_) => {
                self.nodes.remove(path);
                Ok(Value::Done)
            }
        }
    }

    /// Every error POSIX allows for `rename(from, to)`; none when it succeeds.
    fn rename_errors(&self, from: &str, to: &str) -> Vec<i32> {
        let mut errors = self.prefix_errors(to);
        let source = match self.existing(from) {
            Ok(node) => node,
            Err(e) => return [errors, e].concat(),
        };
        if from == to {
            return errors;
        }
        let dir = *source == Node::Dir;
        if dir && is_under(to, from) {
            errors.push(libc::EINVAL);
        }
        match self.node(to) {
            Some(Node::File(_)) if dir => errors.push(libc::ENOTDIR),
            Some(Node::Dir) if !dir => errors.push(libc::EISDIR),
            Some(Node::Dir) if !self.children(to).is_empty() => {
                errors.extend([libc::ENOTEMPTY, libc::EEXIST])
            }
            _ => {}
        }
        errors
    }

    fn rename(&mut self, from: &str, to: &str) -> ModelResult {
        let errors = self.rename_errors(from, to);
        if !errors.is_empty() {
            return Err(errors);
        }
        if from != to {
            self.nodes.remove(to);
            let moved: Vec<String> = self
                .nodes
                .keys()
                .filter(|p| *p == from || is_under(p, from))
                .cloned()
                .collect();
            for old in moved {
                let node = self.nodes.remove(&old).unwrap();
                self.nodes
                    .insert(format!("{to}{}", &old[from.len()..]), node);
            }
        }
        Ok(Value::Done)
    }
}

/// The same operation on the cluster.
fn run(client: &mut Client, op: &Op) -> Result<Value, i32> {
    let done = |r: benchfs::client::Result<()>| r.map(|_| Value::Done);
    let result = match op {
        Op::Mkdir(p) => done(client.mkdir(p, 0o755)),
        Op::Rmdir(p) => done(client.rmdir(p)),
        Op::Create(p) => done(client.create(p, 0o644).and_then(|f| client.close(f))),
        Op::Unlink(p) => done(client.unlink(p)),
        Op::Rename(from, to) => done(client.rename(from, to)),
        Op::Truncate(p, size) => done(client.truncate(p, *size)),
        Op::Write(p, offset, len, seed) => done(write(client, p, *offset, &pattern(*seed, *len))),
        Op::Readdir(p) => client.readdir(p).map(|entries| {
            let listed = entries
                .into_iter()
                .map(|e| (e.name, e.kind == EntryKind::Directory));
            Value::Entries(listed.collect())
        }),
        Op::Stat(p) => client.stat(p).map(|st| {
            let dir = st.mode & libc::S_IFMT == libc::S_IFDIR;
            let size = if dir { 0 } else { st.size };
            Value::Stat {
                dir,
                size,
                nlink: st.nlink,
            }
        }),
    };
    result.map_err(|e| e.errno())
}

fn write(client: &mut Client, path: &str, offset: u64, data: &[u8]) -> benchfs::client::Result<()> {
    let mut file = client.open(path, OpenFlags::READ_WRITE, 0)?;
    client.write_at(&mut file, data, offset)?;
    client.close(file)
}

fn agree(model: &ModelResult, real: &Result<Value, i32>) -> bool {
    match (model, real) {
        (Ok(want), Ok(got)) => want == got,
        (Err(allowed), Err(errno)) => allowed.contains(errno),
        _ => false,
    }
}

/// Every path of the name space (not the root).
fn all_paths() -> Vec<String> {
    let mut paths: Vec<String> = NAMES.iter().map(|n| format!("/{n}")).collect();
    for depth in 1..3 {
        let above: Vec<String> = paths
            .iter()
            .filter(|p| p.matches('/').count() == depth)
            .cloned()
            .collect();
        for p in above {
            paths.extend(NAMES.iter().map(|n| format!("{p}/{n}")));
        }
    }
    paths
}

/// Draws the operations of a walk: paths are often ones that exist, so that operations
/// succeed as well as fail.
struct Walker {
    rng: Rng,
    paths: Vec<String>,
}

impl Walker {
    fn path(&mut self, model: &Model, want: impl Fn(&Node) -> bool) -> String {
        let existing: Vec<&String> = model
            .nodes
            .iter()
            .filter(|(p, n)| *p != "/" && want(n))
            .map(|(p, _)| p)
            .collect();
        if !existing.is_empty() && self.rng.below(10) < 7 {
            return self.rng.pick(&existing).to_string();
        }
        self.rng.pick(&self.paths).clone()
    }

    /// A path that does not exist yet, most often in an existing directory.
    fn fresh(&mut self, model: &Model) -> String {
        let fresh: Vec<&String> = self
            .paths
            .iter()
            .filter(|p| model.node(p).is_none() && model.is_dir(parent(p)))
            .collect();
        if !fresh.is_empty() && self.rng.below(10) < 8 {
            return self.rng.pick(&fresh).to_string();
        }
        self.rng.pick(&self.paths).clone()
    }

    fn size(&mut self) -> u64 {
        let sizes = [0, 1, 100, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 123];
        match self.rng.below(2) {
            0 => *self.rng.pick(&sizes),
            _ => self.rng.below(MAX_SIZE),
        }
    }

    fn op(&mut self, model: &Model) -> Op {
        let file = |n: &Node| matches!(n, Node::File(_));
        let any = |_: &Node| true;
        match self.rng.below(20) {
            0..=3 => Op::Mkdir(self.fresh(model)),
            4..=6 => Op::Create(self.fresh(model)),
            7..=9 => {
                let (path, offset) = (self.path(model, file), self.size());
                let len = 1 + self.rng.below(3000) as usize;
                Op::Write(path, offset, len, self.rng.next_u64())
            }
            10..=12 => Op::Rename(self.path(model, any), self.fresh(model)),
            13 => Op::Rename(self.path(model, any), self.path(model, any)),
            14 => Op::Unlink(self.path(model, any)),
            15 => Op::Rmdir(self.path(model, |n| *n == Node::Dir)),
            16 => Op::Truncate(self.path(model, file), self.size()),
            17 => Op::Readdir(self.dir_or_root(model)),
            _ => Op::Stat(self.dir_or_root(model)),
        }
    }

    fn dir_or_root(&mut self, model: &Model) -> String {
        match self.rng.below(6) {
            0 => "/".to_string(),
            _ => self.path(model, |_| true),
        }
    }
}

/// Differences between the whole tree of the cluster and the model's, if any.
fn tree_differences(client: &mut Client, model: &Model) -> Option<String> {
    let expected: BTreeMap<String, EntryKind> = model
        .nodes
        .iter()
        .filter(|(p, _)| *p != "/")
        .map(|(p, n)| {
            let kind = match n {
                Node::Dir => EntryKind::Directory,
                Node::File(_) => EntryKind::File,
            };
            (p.clone(), kind)
        })
        .collect();
    let actual = match walk(client, "/") {
        Ok(found) => found,
        Err(e) => return Some(format!("listing the tree: {e}")),
    };
    if actual != expected {
        return Some(diff(&expected, &actual));
    }
    let nodes = model.nodes.iter();
    nodes
        .map(|(p, n)| node_difference(client, model, p, n))
        .find(Option::is_some)
        .flatten()
        .or_else(|| leaks(client, model))
}

/// Inodes or chunk files the model's names do not account for.
fn leaks(client: &mut Client, model: &Model) -> Option<String> {
    let stats = client.target_stats().expect("statistics of the targets");
    let inodes: u64 = stats.iter().map(|s| s.inodes).sum();
    let chunk_files: u64 = stats.iter().map(|s| s.chunk_files).sum();
    let chunks: u64 = model
        .nodes
        .values()
        .map(|n| match n {
            Node::File(data) => (data.len() as u64).div_ceil(CHUNK),
            Node::Dir => 0,
        })
        .sum();
    if inodes != model.nodes.len() as u64 {
        return Some(format!(
            "{inodes} inodes stored for {} names",
            model.nodes.len()
        ));
    }
    (chunk_files > chunks).then(|| format!("{chunk_files} chunk files for {chunks} chunks"))
}

fn node_difference(client: &mut Client, model: &Model, path: &str, node: &Node) -> Option<String> {
    let stat = match client.stat(path) {
        Ok(stat) => stat,
        Err(e) => return Some(format!("stat {path}: {e}")),
    };
    if stat.nlink != model.nlink(path) {
        return Some(format!(
            "{path}: nlink {} not {}",
            stat.nlink,
            model.nlink(path)
        ));
    }
    let Node::File(want) = node else {
        return None;
    };
    match read_file(client, path) {
        Ok(got) if got == *want && stat.size == want.len() as u64 => None,
        Ok(got) => Some(format!(
            "{path}: size {} and {} bytes read, not the {} bytes of the model{}",
            stat.size,
            got.len(),
            want.len(),
            first_difference(&got, want)
        )),
        Err(e) => Some(format!("read {path}: {e}")),
    }
}

fn first_difference(got: &[u8], want: &[u8]) -> String {
    match got.iter().zip(want).position(|(a, b)| a != b) {
        Some(at) => format!("; first wrong byte at {at}: {} not {}", got[at], want[at]),
        None => String::new(),
    }
}

/// Successes and errors of each kind of operation in a walk.
#[derive(Default)]
struct Tally(BTreeMap<&'static str, (usize, usize)>);

impl Tally {
    fn count(&mut self, name: &'static str, result: &Result<Value, i32>) {
        let counts = self.0.entry(name).or_default();
        match result {
            Ok(_) => counts.0 += 1,
            Err(_) => counts.1 += 1,
        }
    }

    fn successes(&self) -> usize {
        self.0.values().map(|c| c.0).sum()
    }
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, (ok, err)) in &self.0 {
            write!(f, "{name} {ok}/{err} ")?;
        }
        Ok(())
    }
}

fn cluster() -> Cluster {
    Cluster::start(Options::new(Transport::Tcp))
}

fn client_of(cluster: &Cluster) -> Client {
    let mut config = cluster.client_config();
    config.chunk_size_bytes = CHUNK;
    Client::connect(config).expect("client connects")
}

fn steps() -> usize {
    std::env::var("NS_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(STEPS)
}

/// A walk in progress: the cluster's client, the model, and what happened so far.
struct Walk {
    seed: u64,
    client: Client,
    model: Model,
    walker: Walker,
    history: Vec<String>,
    tally: Tally,
}

impl Walk {
    fn new(seed: u64, mut client: Client) -> Walk {
        // Stores the root's inode, as the model counts it.
        client.mkdir("/z", 0o755).unwrap();
        client.rmdir("/z").unwrap();
        Walk {
            seed,
            client,
            model: Model::new(),
            walker: Walker {
                rng: Rng::new(seed),
                paths: all_paths(),
            },
            history: Vec::new(),
            tally: Tally::default(),
        }
    }

    /// The seed, the step and the last operations, for a failure.
    fn context(&self, step: usize) -> String {
        let from = self.history.len().saturating_sub(HISTORY);
        let last = self.history[from..].join("\n");
        format!("seed {}, step {step}; last operations:\n{last}", self.seed)
    }

    /// Step `step`: one operation on both, then (if `check`) the whole tree.
    fn step(&mut self, step: usize, check: bool) {
        let op = self.walker.op(&self.model);
        let name = op.name(&self.model);
        let want = self.model.apply(&op);
        let got = run(&mut self.client, &op);
        self.tally.count(name, &got);
        self.history.push(format!("step {step}: {op:?} -> {got:?}"));
        if !agree(&want, &got) {
            panic!(
                "{op:?}: model {want:?}, cluster {got:?}\n{}",
                self.context(step)
            );
        }
        if check {
            if let Some(difference) = tree_differences(&mut self.client, &self.model) {
                panic!(
                    "the tree differs from the model: {difference}\n{}",
                    self.context(step)
                );
            }
        }
    }
}

/// Runs the walk of `seed` (or of `NS_MODEL_SEED`); fails with the seed, the step and the
/// operations before it.
fn random_walk(seed: u64) {
    let seed = std::env::var("NS_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(seed);
    let cluster = cluster();
    let mut walk = Walk::new(seed, client_of(&cluster));
    let steps = steps();
    for step in 1..=steps {
        walk.step(step, step % CHECK_EVERY == 0 || step == steps);
    }
    let (made, tally) = (walk.model.nodes.len(), &walk.tally);
    eprintln!("seed {seed}: {steps} steps agree with the model, {made} names at the end");
    eprintln!("  (operation: successes/errors) {tally:?}");
    let successes = tally.successes();
    assert!(
        successes > steps / 3,
        "too few operations succeeded: {tally:?}"
    );
}

#[test]
fn random_walk_seed_1() {
    random_walk(1);
}

#[test]
fn random_walk_seed_2() {
    random_walk(2);
}

#[test]
fn random_walk_seed_3() {
    random_walk(3);
}

#[test]
fn the_model_follows_posix_on_a_few_known_cases() {
    let mut m = Model::new();
    let ok = Ok(Value::Done);
    assert_eq!(m.apply(&Op::Mkdir("/a".into())), ok);
    assert_eq!(m.apply(&Op::Create("/a/b".into())), ok);
    assert_eq!(
        m.apply(&Op::Mkdir("/a/b/c".into())),
        Err(vec![libc::ENOTDIR, libc::ENOENT])
    );
    assert_eq!(
        m.apply(&Op::Rename("/a".into(), "/a/c".into())),
        Err(vec![libc::EINVAL])
    );
    assert_eq!(
        m.apply(&Op::Rmdir("/a".into())),
        Err(vec![libc::ENOTEMPTY, libc::EEXIST])
    );
    assert_eq!(m.apply(&Op::Rename("/a/b".into(), "/c".into())), ok);
    assert_eq!(
        m.apply(&Op::Rename("/a".into(), "/c".into())),
        Err(vec![libc::ENOTDIR])
    );
    assert_eq!(
        m.apply(&Op::Rename("/c".into(), "/a".into())),
        Err(vec![libc::EISDIR])
    );
    assert_eq!(m.apply(&Op::Truncate("/c".into(), 3)), ok);
    let stat = Value::Stat {
        dir: false,
        size: 3,
        nlink: 1,
    };
    assert_eq!(m.apply(&Op::Stat("/c".into())), Ok(stat));
    assert_eq!(m.nlink("/"), 3);
}
