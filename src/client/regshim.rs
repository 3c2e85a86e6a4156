//! Temporary stand-in until the rdma registration cache lands.
use crate::rdma::{Context, MemRegion};
use std::sync::Arc;
pub struct RegCache {
    context: Arc<Context>,
    regions: Vec<(MemRegion, Vec<u8>)>,
}
impl std::fmt::Debug for RegCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegCache")
    }
}
#[derive(Debug)]
pub struct Handle<'a>(&'a [u8]);
impl Handle<'_> {
    pub fn rkey(&self) -> &[u8] {
        self.0
    }
}
impl RegCache {
    pub fn new(context: &Arc<Context>, _max: usize) -> RegCache {
        RegCache {
            context: context.clone(),
            regions: Vec::new(),
        }
    }
    pub fn lookup(&mut self, addr: *const u8, len: usize) -> crate::rdma::Result<Handle<'_>> {
        if let Some(i) = self.regions.iter().position(|(r, _)| {
            r.address() as usize <= addr as usize
                && addr as usize + len <= r.address() as usize + r.len()
        }) {
            return Ok(Handle(&self.regions[i].1));
        }
        // SAFETY: stand-in.
        let r = unsafe { MemRegion::register(&self.context, addr as *mut u8, len) }?;
        let k = r.pack_rkey()?;
        self.regions.push((r, k));
        Ok(Handle(&self.regions.last().unwrap().1))
    }
}
