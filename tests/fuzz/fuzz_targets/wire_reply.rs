//! Reply headers and stats as a client receives them: arbitrary bytes never panic
//! [`decode_reply`] or [`decode_stats`]; they accept exactly their fixed size (a reply only
//! with a status of 0 or a negative errno), and what they accept re-encodes to the input.
#![no_main]

use benchfs::proto::{
    decode_reply, decode_stats, ProtoError, WireInode, WireReply, WireStats, ERRNO_MAX,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_reply(data) {
        Ok(reply) => {
            assert_eq!(bytemuck::bytes_of(&reply), data);
            assert!((-ERRNO_MAX..=0).contains(&reply.status));
            assert_eq!(decode_reply(bytemuck::bytes_of(&reply)), Ok(reply));
        }
        Err(ProtoError::BadStatus(status)) => {
            assert_eq!(data.len(), std::mem::size_of::<WireReply>());
            assert!(!(-ERRNO_MAX..=0).contains(&status));
        }
        Err(_) => assert_ne!(data.len(), std::mem::size_of::<WireReply>()),
    }
    match decode_stats(data) {
        Ok(stats) => assert_eq!(bytemuck::bytes_of(&stats), data),
        Err(_) => assert_ne!(data.len(), std::mem::size_of::<WireStats>()),
    }
    // The inode of a rename's PutInode travels as raw data of its own size.
    if let Ok(inode) = bytemuck::try_pod_read_unaligned::<WireInode>(data) {
        assert_eq!(bytemuck::bytes_of(&inode), data);
    }
});
