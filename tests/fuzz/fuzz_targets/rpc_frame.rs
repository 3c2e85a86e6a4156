//! Whole active-message headers: the rpc frame (magic, version, kind, request id), then the
//! request header a shard decodes or the reply header a client decodes. Arbitrary bytes never
//! panic; an accepted frame re-encodes to the input; a frame built from the input
//! round-trips.
#![no_main]

use benchfs::proto::{decode_reply, decode_request, encode_request};
use benchfs::rdma::rpc::{Frame, Kind, FRAME_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Frame::decode(data) {
        Ok((frame, rest)) => {
            assert_eq!(frame.encode(rest), data);
            match frame.kind {
                Kind::Request => {
                    if let Ok(req) = decode_request(rest) {
                        assert_eq!(encode_request(req.wire, req.path, req.rkey), rest);
                    }
                }
                Kind::Reply => {
                    if let Ok(reply) = decode_reply(rest) {
                        assert_eq!(bytemuck::bytes_of(&reply), rest);
                    }
                }
            }
        }
        Err(_) => assert!(
            data.len() < FRAME_BYTES
                || &data[..4] != b"BFSR"
                || data[4..6] != [1, 0]
                || !matches!(data[6], 1 | 2)
                || data[7] != 0
        ),
    }
    if let Some((&kind, rest)) = data.split_first() {
        let id = rest
            .get(..8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
        let kind = if kind & 1 == 0 {
            Kind::Request
        } else {
            Kind::Reply
        };
        let frame = Frame {
            kind,
            request_id: id,
        };
        let encoded = frame.encode(rest);
        assert_eq!(Frame::decode(&encoded).unwrap(), (frame, rest));
    }
});
