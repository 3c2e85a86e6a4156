mod common;
use common::{Cluster, Options, Transport};
use std::time::Instant;

#[test]
fn probe() {
    let mut o = Options::new(Transport::Tcp);
    o.servers = 4;
    o.shards = 1;
    let cluster = Cluster::start(o);
    let mut c = cluster.client();
    c.mkdir("/p", 0o755).unwrap();
    let t = Instant::now();
    for i in 0..1000 {
        let f = c.create(&format!("/p/f{i}"), 0o644).unwrap();
        c.close(f).unwrap();
    }
    eprintln!("1000 creates {:?} reqs {}", t.elapsed(), c.requests_sent());
    let t = Instant::now();
    for i in 0..1000 {
        let mut f = c.create(&format!("/p/g{i}"), 0o644).unwrap();
        c.write_at(&mut f, b"hello", 0).unwrap();
        c.close(f).unwrap();
    }
    eprintln!("1000 creates+write {:?}", t.elapsed());
    let t = Instant::now();
    for i in 0..1000 {
        c.stat(&format!("/p/g{i}")).unwrap();
    }
    eprintln!("1000 stats {:?}", t.elapsed());
    let t = Instant::now();
    c.rename("/p", "/q").unwrap();
    eprintln!("rename of 2000 {:?}", t.elapsed());
    let t = Instant::now();
    for i in 0..1000 {
        c.unlink(&format!("/q/g{i}")).unwrap();
    }
    eprintln!("1000 unlink {:?}", t.elapsed());
}
