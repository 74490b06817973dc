//! See Cargo.toml: the cost of compressing and inflating one ~1 KiB JSON message per flate2
//! backend and level, as permessage-deflate without context takeover does it.

use std::time::Instant;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

fn main() {
    // A ~1 KiB message as the server sends it: the envelope and a ticker-like `data`.
    let mut msg = String::from(
        r#"{"type":"message","room":"lobby","from":"user123","seq":123456,"ts":1733500000000,"data":{"rows":["#,
    );
    let mut i = 0;
    while msg.len() < 1000 {
        msg.push_str(&format!(
            r#"{{"sym":"S{i}","bid":{}.25,"ask":{}.5,"vol":{}}},"#,
            100 + i,
            100 + i,
            12000 + i * 7
        ));
        i += 1;
    }
    msg.push_str("{}]}}");
    let input = msg.as_bytes();
    let backend = if cfg!(feature = "zlib-rs") { "zlib-rs" } else { "miniz_oxide" };
    const N: u32 = 100_000;
    for level in [1u32, 2, 4, 6, 9] {
        let mut compress = Compress::new(Compression::new(level), false);
        let mut out = Vec::with_capacity(input.len() + 64);
        let start = Instant::now();
        for _ in 0..N {
            compress.reset();
            out.clear();
            compress.compress_vec(input, &mut out, FlushCompress::Sync).unwrap();
        }
        let compress_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(N);
        let mut inflate = Decompress::new(false);
        let mut plain = Vec::with_capacity(4096);
        let start = Instant::now();
        for _ in 0..N {
            inflate.reset(false);
            plain.clear();
            inflate.decompress_vec(&out, &mut plain, FlushDecompress::Sync).unwrap();
        }
        let inflate_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(N);
        assert_eq!(plain, input);
        println!(
            "{backend} level {level}: {} -> {} bytes, compress {compress_us:.2} µs, inflate {inflate_us:.2} µs",
            input.len(),
            out.len() - 4
        );
    }
}
