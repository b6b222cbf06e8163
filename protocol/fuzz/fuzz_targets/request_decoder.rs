//! Fuzzes the request decoder: any byte stream, delivered in any chunking, must decode
//! without panicking, and chunked delivery must give exactly what one-shot delivery gives.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use redoubt_protocol::{Limits, RequestDecoder};

fn run(chunks: &[&[u8]]) -> (Vec<Vec<Vec<u8>>>, bool) {
    let limits = Limits { max_bulk_len: 1 << 20, max_multibulk_len: 1 << 16, query_buffer_limit: 1 << 22 };
    let mut d = RequestDecoder::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            match d.decode(&mut buf, false) {
                Ok(Some(args)) => out.push(args.iter().map(|a| a.to_vec()).collect()),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    // First byte picks the chunk size for the split delivery.
    let step = (data[0] as usize % 16) + 1;
    let body = &data[1..];
    let whole = run(&[body]);
    let pieces: Vec<&[u8]> = body.chunks(step).collect();
    let split = run(&pieces);
    assert_eq!(whole, split);
});
