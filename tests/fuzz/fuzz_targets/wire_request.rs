//! Request headers as a shard receives them (after the rpc frame): arbitrary bytes never
//! panic [`decode_request`]; what it accepts re-encodes to exactly the input; and a header
//! built from the input with a known op and known flags round-trips through
//! [`encode_request`].
#![no_main]

use benchfs::path::{normalize_bytes, PATH_MAX_BYTES};
use benchfs::proto::{
    decode_request, encode_request, WireRequest, KNOWN_FLAGS, OP_COUNT, RKEY_MAX_BYTES,
};
use libfuzzer_sys::fuzz_target;

const REQUEST_BYTES: usize = std::mem::size_of::<WireRequest>();

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = decode_request(data) {
        assert_eq!(req.path.len(), usize::from(req.wire.path_len));
        assert_eq!(req.rkey.len(), usize::from(req.wire.rkey_len));
        assert!(req.path.len() <= PATH_MAX_BYTES && req.rkey.len() <= RKEY_MAX_BYTES);
        assert_eq!(req.op as u16, req.wire.op);
        assert_eq!(req.wire.flags & !KNOWN_FLAGS, 0);
        assert_eq!(encode_request(req.wire, req.path, req.rkey), data);
        let _ = normalize_bytes(req.path);
    }
    if data.len() < REQUEST_BYTES {
        return;
    }
    let (head, rest) = data.split_at(REQUEST_BYTES);
    let mut wire: WireRequest = bytemuck::pod_read_unaligned(head);
    wire.op = wire.op % OP_COUNT + 1;
    wire.flags &= KNOWN_FLAGS;
    let split = usize::from(wire.path_len)
        .min(rest.len())
        .min(PATH_MAX_BYTES);
    let (path, rkey) = rest.split_at(split);
    let rkey = &rkey[..rkey.len().min(RKEY_MAX_BYTES)];
    let encoded = encode_request(wire, path, rkey);
    let req = decode_request(&encoded).expect("an encoded request decodes");
    wire.path_len = path.len() as u16;
    wire.rkey_len = rkey.len() as u16;
    assert_eq!(req.wire, wire);
    assert_eq!((req.path, req.rkey), (path, rkey));
});
