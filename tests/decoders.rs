//! Property tests of every decoder that reads bytes from the network: the rpc frame, request
//! and reply headers, stats, readdir pages and cursors, and path normalisation.
//!
//! For each: arbitrary bytes never panic; what an encoder produces decodes to the same value;
//! a valid message with one byte changed or cut short is either refused or decodes to a value
//! that re-encodes to exactly the bytes given (so nothing was read beyond them); and a length
//! field that disagrees with the payload is refused. The fuzz targets in `tests/fuzz` check
//! the same properties under coverage guidance.

use benchfs::path::{normalize, normalize_bytes, PathError, NAME_MAX_BYTES, PATH_MAX_BYTES};
use benchfs::proto::{
    decode_entries, decode_reply, decode_request, decode_stats, encode_entry, encode_request, Op,
    ProtoError, WireInode, WireReply, WireRequest, WireStats, ERRNO_MAX, FLAG_EXCL, FLAG_INLINE,
    FLAG_REPLY_DATA, FLAG_SYNC, KNOWN_FLAGS, OP_COUNT, RKEY_MAX_BYTES,
};
use benchfs::rdma::rpc::{Frame, Kind, FRAME_BYTES};
use benchfs::server::meta::MetaService;
use bytemuck::Zeroable;
use proptest::prelude::*;
use std::sync::OnceLock;

const REQUEST_BYTES: usize = std::mem::size_of::<WireRequest>();
const REPLY_BYTES: usize = std::mem::size_of::<WireReply>();
const STATS_BYTES: usize = std::mem::size_of::<WireStats>();
/// Offsets of `path_len` and `rkey_len` in a [`WireRequest`].
const PATH_LEN_AT: usize = 20;
const RKEY_LEN_AT: usize = 22;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// A request header the decoder must accept: a known op, known flags, any other field.
fn wire_request() -> impl Strategy<Value = WireRequest> {
    (
        prop::array::uniform32(any::<u8>()),
        prop::array::uniform32(any::<u8>()),
        prop::array::uniform16(any::<u8>()),
        1..=OP_COUNT,
        any::<u16>(),
    )
        .prop_map(|(a, b, c, op, flags)| {
            let mut raw = [0u8; REQUEST_BYTES];
            raw[..32].copy_from_slice(&a);
            raw[32..64].copy_from_slice(&b);
            raw[64..].copy_from_slice(&c);
            let mut wire: WireRequest = bytemuck::pod_read_unaligned(&raw);
            wire.op = op;
            wire.flags = flags & KNOWN_FLAGS;
            wire
        })
}

/// A valid encoded request with its parts.
fn request_message() -> impl Strategy<Value = (WireRequest, Vec<u8>, Vec<u8>)> {
    (wire_request(), bytes(300), bytes(200))
}

fn entry_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._ é\u{1F600}-]{1,60}"
        .prop_filter("a name fits NAME_MAX", |n| n.len() <= NAME_MAX_BYTES)
}

fn entries() -> impl Strategy<Value = Vec<(u8, String)>> {
    prop::collection::vec((any::<u8>(), entry_name()), 0..12)
}

fn encode_entries(entries: &[(u8, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, name) in entries {
        encode_entry(&mut out, *kind, name);
    }
    out
}

/// A request that decoded must re-encode to exactly the bytes it came from.
fn check_decoded_request(input: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(req) = decode_request(input) {
        prop_assert_eq!(req.path.len(), usize::from(req.wire.path_len));
        prop_assert_eq!(req.rkey.len(), usize::from(req.wire.rkey_len));
        prop_assert!(req.path.len() <= PATH_MAX_BYTES && req.rkey.len() <= RKEY_MAX_BYTES);
        prop_assert_eq!(req.op as u16, req.wire.op);
        prop_assert_eq!(req.wire.flags & !KNOWN_FLAGS, 0);
        prop_assert_eq!(encode_request(req.wire, req.path, req.rkey), input);
        let _ = normalize_bytes(req.path);
    }
    Ok(())
}

/// Entries that decoded must re-encode to exactly the bytes they came from.
fn check_decoded_entries(input: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(list) = decode_entries(input) {
        for (_, name) in &list {
            prop_assert!(!name.is_empty() && name.len() <= NAME_MAX_BYTES);
        }
        prop_assert_eq!(encode_entries(&list), input);
    }
    Ok(())
}

/// Checks the shape of a normalised path.
fn check_normal_form(path: &str) -> Result<(), TestCaseError> {
    prop_assert!(path.starts_with('/'));
    prop_assert!(path.len() <= PATH_MAX_BYTES);
    prop_assert!(!path.contains('\0'));
    if path != "/" {
        prop_assert!(!path.ends_with('/'));
        for part in path[1..].split('/') {
            prop_assert!(!part.is_empty() && part != "." && part != "..");
            prop_assert!(part.len() <= NAME_MAX_BYTES);
        }
    }
    prop_assert_eq!(normalize(path), Ok(path.to_string()));
    Ok(())
}

/// Path components: names (some odd), `.`, `..` and empty ones.
fn path_parts() -> impl Strategy<Value = Vec<String>> {
    let part = prop_oneof![
        6 => "[a-z.é]{1,8}".prop_filter("`..` is tested apart", |p| p != ".."),
        1 => Just(String::new()),
        1 => Just(".".to_string()),
        1 => Just("...".to_string()),
    ];
    prop::collection::vec(part, 0..10)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn requests_round_trip((wire, path, rkey) in request_message()) {
        let encoded = encode_request(wire, &path, &rkey);
        prop_assert_eq!(encoded.len(), REQUEST_BYTES + path.len() + rkey.len());
        let req = decode_request(&encoded).unwrap();
        let mut want = wire;
        want.path_len = path.len() as u16;
        want.rkey_len = rkey.len() as u16;
        prop_assert_eq!(req.wire, want);
        prop_assert_eq!(req.op as u16, wire.op);
        prop_assert_eq!((req.path, req.rkey), (&path[..], &rkey[..]));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_request_decoder(input in bytes(600)) {
        check_decoded_request(&input)?;
    }

    #[test]
    fn arbitrary_headers_with_consistent_lengths_decode_or_are_refused(
        mut head in prop::collection::vec(any::<u8>(), REQUEST_BYTES),
        tail in bytes(400),
    ) {
        // Random fixed parts whose lengths happen to add up: reach the op and flag checks.
        let split = tail.len() / 2;
        head[PATH_LEN_AT..PATH_LEN_AT + 2].copy_from_slice(&(split as u16).to_le_bytes());
        head[RKEY_LEN_AT..RKEY_LEN_AT + 2]
            .copy_from_slice(&((tail.len() - split) as u16).to_le_bytes());
        head.extend_from_slice(&tail);
        check_decoded_request(&head)?;
    }

    #[test]
    fn corrupted_requests_are_refused_or_consistent(
        (wire, path, rkey) in request_message(),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let mut encoded = encode_request(wire, &path, &rkey);
        let at = at.index(encoded.len());
        encoded[at] = value;
        check_decoded_request(&encoded)?;
        if at < REQUEST_BYTES && (PATH_LEN_AT..RKEY_LEN_AT + 2).contains(&at) {
            let original = encode_request(wire, &path, &rkey);
            if original[at] != value {
                prop_assert!(decode_request(&encoded).is_err(), "length byte {} changed", at);
            }
        }
    }

    #[test]
    fn truncated_or_extended_requests_are_refused(
        (wire, path, rkey) in request_message(),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        let encoded = encode_request(wire, &path, &rkey);
        let cut = cut.index(encoded.len());
        let refused = matches!(decode_request(&encoded[..cut]), Err(ProtoError::Length { .. }));
        prop_assert!(refused);
        let mut longer = encoded;
        longer.extend_from_slice(&extra);
        let refused = matches!(decode_request(&longer), Err(ProtoError::Length { .. }));
        prop_assert!(refused);
    }

    #[test]
    fn request_lengths_that_disagree_with_the_payload_are_refused(
        (wire, path, rkey) in request_message(),
        path_len in any::<u16>(),
        rkey_len in any::<u16>(),
    ) {
        prop_assume!(
            usize::from(path_len) != path.len() || usize::from(rkey_len) != rkey.len()
        );
        let mut encoded = encode_request(wire, &path, &rkey);
        encoded[PATH_LEN_AT..PATH_LEN_AT + 2].copy_from_slice(&path_len.to_le_bytes());
        encoded[RKEY_LEN_AT..RKEY_LEN_AT + 2].copy_from_slice(&rkey_len.to_le_bytes());
        let declared = usize::from(path_len) + usize::from(rkey_len);
        match decode_request(&encoded) {
            // Only a split of the same total between path and key can still fit.
            Ok(req) => {
                prop_assert_eq!(declared, path.len() + rkey.len());
                prop_assert_eq!(req.path.len(), usize::from(path_len));
            }
            Err(ProtoError::Length { .. } | ProtoError::TooLong { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }

    #[test]
    fn replies_and_stats_round_trip_and_check_their_length(input in bytes(200)) {
        match decode_reply(&input) {
            Ok(reply) => {
                prop_assert_eq!(bytemuck::bytes_of(&reply), &input[..]);
                prop_assert!((-ERRNO_MAX..=0).contains(&reply.status));
            }
            Err(ProtoError::BadStatus(status)) => {
                prop_assert_eq!(input.len(), REPLY_BYTES);
                prop_assert!(!(-ERRNO_MAX..=0).contains(&status));
            }
            Err(_) => prop_assert_ne!(input.len(), REPLY_BYTES),
        }
        match decode_stats(&input) {
            Ok(stats) => prop_assert_eq!(bytemuck::bytes_of(&stats), &input[..]),
            Err(_) => prop_assert_ne!(input.len(), STATS_BYTES),
        }
    }

    #[test]
    fn reply_values_round_trip(
        status in -ERRNO_MAX..=0,
        flags in any::<u32>(),
        value in any::<u64>(),
        inode in prop::array::uniform32(any::<u8>()),
        more in prop::array::uniform32(any::<u8>()),
    ) {
        let mut raw = [0u8; std::mem::size_of::<WireInode>()];
        raw[..32].copy_from_slice(&inode);
        raw[32..].copy_from_slice(&more[..std::mem::size_of::<WireInode>() - 32]);
        let reply = WireReply {
            status,
            flags,
            value,
            aux: !value,
            inode: bytemuck::pod_read_unaligned(&raw),
        };
        prop_assert_eq!(decode_reply(bytemuck::bytes_of(&reply)), Ok(reply));
        let cut = &bytemuck::bytes_of(&reply)[..REPLY_BYTES - 1];
        prop_assert!(decode_reply(cut).is_err());
    }

    #[test]
    fn frames_round_trip(request in any::<bool>(), id in any::<u64>(), header in bytes(120)) {
        let kind = if request { Kind::Request } else { Kind::Reply };
        let frame = Frame { kind, request_id: id };
        let encoded = frame.encode(&header);
        let (decoded, rest) = Frame::decode(&encoded).unwrap();
        prop_assert_eq!(decoded, frame);
        prop_assert_eq!(rest, &header[..]);
    }

    #[test]
    fn arbitrary_frames_never_panic_and_decoded_ones_re_encode(input in bytes(64)) {
        if let Ok((frame, rest)) = Frame::decode(&input) {
            prop_assert_eq!(frame.encode(rest), input);
        } else if input.len() >= FRAME_BYTES {
            prop_assert!(&input[..4] != b"BFSR" || input[4..6] != [1, 0] || input[7] != 0
                || !matches!(input[6], 1 | 2));
        }
    }

    #[test]
    fn corrupted_or_truncated_messages_are_refused_or_consistent(
        (wire, path, rkey) in request_message(),
        id in any::<u64>(),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        // The shard's path: frame, then request header.
        let frame = Frame { kind: Kind::Request, request_id: id };
        let mut message = frame.encode(&encode_request(wire, &path, &rkey));
        let at = at.index(message.len());
        message[at] = value;
        let cut = cut.index(message.len() + 1);
        for input in [&message[..], &message[..cut]] {
            match Frame::decode(input) {
                Ok((frame, rest)) => {
                    prop_assert_eq!(frame.encode(rest), input);
                    check_decoded_request(rest)?;
                }
                Err(_) => prop_assert!(at < FRAME_BYTES || input.len() < FRAME_BYTES),
            }
        }
    }

    #[test]
    fn readdir_entries_round_trip(list in entries()) {
        let encoded = encode_entries(&list);
        prop_assert_eq!(decode_entries(&encoded), Ok(list));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_entry_decoder(input in bytes(600)) {
        check_decoded_entries(&input)?;
    }

    #[test]
    fn corrupted_or_truncated_readdir_pages_are_refused_or_consistent(
        list in entries(),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut encoded = encode_entries(&list);
        prop_assume!(!encoded.is_empty());
        let cut = cut.index(encoded.len());
        check_decoded_entries(&encoded[..cut])?;
        let boundaries: Vec<usize> = list
            .iter()
            .scan(0, |end, (_, name)| {
                *end += 3 + name.len();
                Some(*end)
            })
            .collect();
        if cut > 0 && !boundaries.contains(&cut) {
            prop_assert!(decode_entries(&encoded[..cut]).is_err(), "cut at {}", cut);
        }
        let at = at.index(encoded.len());
        encoded[at] = value;
        check_decoded_entries(&encoded)?;
    }

    #[test]
    fn entry_lengths_beyond_the_page_are_refused(
        list in entries(),
        name in entry_name(),
        over in 1u16..300,
    ) {
        let mut encoded = encode_entries(&list);
        let last = encoded.len();
        encode_entry(&mut encoded, 8, &name);
        let declared = name.len() as u16 + over;
        encoded[last + 1..last + 3].copy_from_slice(&declared.to_le_bytes());
        prop_assert!(decode_entries(&encoded).is_err());
    }

    #[test]
    fn arbitrary_paths_never_panic_and_normalise_to_the_normal_form(input in bytes(300)) {
        match normalize_bytes(&input) {
            Ok(path) => check_normal_form(&path)?,
            Err(PathError::NotUtf8) => prop_assert!(std::str::from_utf8(&input).is_err()),
            Err(PathError::Nul) => prop_assert!(input.contains(&0)),
            Err(PathError::NotAbsolute(_)) => prop_assert!(input.first() != Some(&b'/')),
            Err(PathError::DotDot(_) | PathError::TooLong(_)) => {}
        }
    }

    #[test]
    fn spellings_of_one_path_normalise_alike(parts in path_parts(), extra in 0usize..4) {
        let joined = format!("/{}", parts.join("/"));
        let noisy = format!("{}{}/./", "/".repeat(extra + 1), parts.join("//./"));
        let names: Vec<&str> =
            parts.iter().map(String::as_str).filter(|p| !p.is_empty() && *p != ".").collect();
        let want = format!("/{}", names.join("/"));
        prop_assert_eq!(normalize(&joined), Ok(want.clone()));
        prop_assert_eq!(normalize(&noisy), Ok(want.clone()));
        check_normal_form(&want)?;
        let escaping = format!("{joined}/../x");
        prop_assert!(matches!(normalize(&escaping), Err(PathError::DotDot(_))));
        prop_assert!(matches!(normalize(&joined[1..]), Err(PathError::NotAbsolute(_)))
            || joined[1..].starts_with('/'));
    }

    #[test]
    fn long_paths_and_names_are_refused(name_len in 1usize..400, copies in 1usize..40) {
        let path = format!("/{}", "n".repeat(name_len)).repeat(copies);
        let total = (name_len + 1) * copies;
        match normalize(&path) {
            Ok(p) => prop_assert!(name_len <= NAME_MAX_BYTES && total <= PATH_MAX_BYTES && p == path),
            Err(e) => {
                prop_assert!(name_len > NAME_MAX_BYTES || total > PATH_MAX_BYTES);
                prop_assert_eq!(e.errno(), libc::ENAMETOOLONG);
            }
        }
    }
}

/// A shard's metadata with directory `/d` holding a few entries (sorted), for readdir cursors.
fn directory_with_entries() -> &'static (tempfile::TempDir, MetaService, Vec<String>) {
    static META: OnceLock<(tempfile::TempDir, MetaService, Vec<String>)> = OnceLock::new();
    META.get_or_init(fill_directory)
}

fn fill_directory() -> (tempfile::TempDir, MetaService, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut meta = MetaService::open(dir.path(), 0, 0).unwrap();
    meta.mkdir("/d", 0o755).unwrap();
    let names = ["a", "b.c", "é", "zz", "\u{1F600}", "a\u{7f}", "0"];
    for name in names {
        meta.add_entry(&format!("/d/{name}"), 8).unwrap();
    }
    let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    names.sort();
    (dir, meta, names)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn readdir_cursors_from_the_wire_list_the_names_after_them(
        cursor in prop_oneof!["\\PC{0,12}", "[a-z\u{0}/é]{0,6}"],
        page_bytes in 1usize..40,
    ) {
        let (_, meta, names) = directory_with_entries();
        let want: Vec<&String> = names.iter().filter(|n| n.as_str() > cursor.as_str()).collect();
        let (page, more) = meta.readdir("/d", &cursor, page_bytes).unwrap();
        prop_assert!(!page.is_empty() || (!more && want.is_empty()));
        let got: Vec<&String> = page.iter().map(|e| &e.name).collect();
        prop_assert_eq!(&got[..], &want[..got.len()]);
        prop_assert_eq!(more, got.len() < want.len());
    }
}

/// Regression: a reply status of `i32::MIN` made the client panic negating it into an errno
/// (overflow); statuses that are not 0 or a negative errno are now refused when decoded.
#[test]
fn reply_statuses_outside_the_errno_range_are_refused() {
    for status in [i32::MIN, -ERRNO_MAX - 1, 1, i32::MAX] {
        let reply = WireReply {
            status,
            ..Default::default()
        };
        let decoded = decode_reply(bytemuck::bytes_of(&reply));
        assert_eq!(decoded, Err(ProtoError::BadStatus(status)));
    }
    for status in [0, -libc::ENOENT, -ERRNO_MAX] {
        let reply = WireReply {
            status,
            ..Default::default()
        };
        assert_eq!(decode_reply(bytemuck::bytes_of(&reply)), Ok(reply));
    }
}

#[test]
fn an_empty_readdir_page_and_an_empty_request_path_decode() {
    assert_eq!(decode_entries(&[]), Ok(Vec::new()));
    let wire = WireRequest {
        op: Op::Stats as u16,
        ..WireRequest::zeroed()
    };
    let encoded = encode_request(wire, b"", b"");
    let req = decode_request(&encoded).unwrap();
    assert_eq!(
        (req.op, req.path, req.rkey),
        (Op::Stats, &b""[..], &b""[..])
    );
}

/// Writes the seed corpus of the fuzz targets in `tests/fuzz/corpus/<target>/`: a few valid
/// messages of each kind (the fuzzers mutate from there). Run it after a format change with
/// `cargo test --test decoders -- --ignored write_fuzz_seed_corpus`; inputs a fuzzer found
/// crashing are added to the same directories by hand, next to these.
#[test]
#[ignore = "writes files into the repository; run by hand after a format change"]
fn write_fuzz_seed_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    for (name, bytes) in seed_requests() {
        write("wire_request", name, &bytes);
        let frame = Frame {
            kind: Kind::Request,
            request_id: 7,
        };
        write(
            "rpc_frame",
            &format!("request-{name}"),
            &frame.encode(&bytes),
        );
    }
    for (name, reply) in seed_replies() {
        write("wire_reply", name, bytemuck::bytes_of(&reply));
        let frame = Frame {
            kind: Kind::Reply,
            request_id: u64::MAX,
        };
        write(
            "rpc_frame",
            &format!("reply-{name}"),
            &frame.encode(bytemuck::bytes_of(&reply)),
        );
    }
    let stats = WireStats {
        rank: 1,
        shard: 2,
        ops: 1000,
        slots: 64,
        ..Default::default()
    };
    write("wire_reply", "stats", bytemuck::bytes_of(&stats));
    let page = [
        (4, "dir".to_string()),
        (8, "file.0".into()),
        (8, "é\u{1F600}".into()),
    ];
    write("readdir_page", "entries", &encode_entries(&page));
    write(
        "readdir_page",
        "one-long-entry",
        &encode_entries(&[(8, "n".repeat(255))]),
    );
    write("readdir_page", "cursor", b"b");
    for (name, path) in [
        ("root", "/"),
        ("noisy", "//mdtest//./test-dir.0-0///file.1/"),
        ("dotdot", "/a/../b"),
        ("relative", "a/b"),
        ("utf8", "/\u{e9}t\u{e9}/\u{1F600}"),
    ] {
        write("path_normalize", name, path.as_bytes());
    }
    for (name, bytes) in seed_logs() {
        write("metalog_replay", name, &bytes);
    }
}

fn seed_requests() -> Vec<(&'static str, Vec<u8>)> {
    let wire = |op: Op, flags: u16| WireRequest {
        secret: [0x5a; 16],
        op: op as u16,
        flags,
        target: 3,
        mode: 0o100644,
        conn_id: 1 << 32,
        file_id: 0x0001_0000_0000_002a,
        chunk_index: 2,
        offset: 4096,
        len: 47008,
        ..WireRequest::zeroed()
    };
    vec![
        ("connect", encode_request(wire(Op::Connect, 0), b"", b"")),
        (
            "create-excl",
            encode_request(wire(Op::Create, FLAG_EXCL), b"/ior/file", b""),
        ),
        (
            "write-inline",
            encode_request(wire(Op::Write, FLAG_INLINE), b"", b""),
        ),
        (
            "read-rkey",
            encode_request(wire(Op::Read, 0), b"", &[0xab; 40]),
        ),
        (
            "readdir",
            encode_request(wire(Op::Readdir, FLAG_REPLY_DATA), b"/mdtest/d.0", b""),
        ),
        (
            "setsize-sync",
            encode_request(wire(Op::SetSize, FLAG_SYNC), b"/f", b""),
        ),
    ]
}

fn seed_replies() -> Vec<(&'static str, WireReply)> {
    let inode = WireInode {
        file_id: 42,
        size: 1 << 20,
        chunk_size: 4 << 20,
        mode: 0o100644,
        nlink: 1,
        atime_ns: 1_700_000_000_000_000_000,
        mtime_ns: 1_700_000_000_000_000_001,
        ctime_ns: 1_700_000_000_000_000_002,
    };
    vec![
        (
            "inode",
            WireReply {
                inode,
                ..Default::default()
            },
        ),
        (
            "enoent",
            WireReply {
                status: -libc::ENOENT,
                ..Default::default()
            },
        ),
        (
            "readdir-more",
            WireReply {
                flags: 2,
                value: 3,
                ..Default::default()
            },
        ),
    ]
}

/// Metadata logs written by the store: mutations of every kind, and a torn one.
fn seed_logs() -> Vec<(&'static str, Vec<u8>)> {
    use benchfs::storage::metalog::{Batch, MetaLog, LOG_FILE_NAME};
    let dir = tempfile::tempdir().unwrap();
    let mut log = MetaLog::open(dir.path()).unwrap();
    let read = || std::fs::read(dir.path().join(LOG_FILE_NAME)).unwrap();
    let empty = read();
    log.put(b"i/a", &[1; 56]).unwrap();
    log.put(b"e/\0a", &[8]).unwrap();
    log.delete(b"i/a").unwrap();
    let mut rename = Batch::new();
    rename
        .delete(b"e/\0a")
        .put(b"e/\0b", &[8])
        .put(b"i/b", &[2; 56]);
    log.apply(rename).unwrap();
    let full = read();
    let torn = full[..full.len() - 5].to_vec();
    vec![("empty", empty), ("mutations", full), ("torn-batch", torn)]
}
