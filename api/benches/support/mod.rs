//! Shared by the benchmarks.

#![allow(dead_code)]

use std::io::Write as _;
use std::time::{Duration, Instant};

/// CPU time (user + system, all threads) process `pid` has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th
    // of the line, in clock ticks (100 per second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The ids of the running processes named `name` (PostgreSQL's server and backends are
/// all `postgres`).
pub fn processes_named(name: &str) -> impl Iterator<Item = u32> + '_ {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(move |pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
}

/// The `p` percentile of `sorted`, in ms.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

/// Runs `connections` clients of `client` in a loop for `seconds`, each asking `urls` in
/// turn (with `If-None-Match` when an ETag is given, always accepting gzip); returns
/// (requests/s, p50 ms, p99 ms).
pub async fn load(
    client: &reqwest::Client,
    urls: &[(String, Option<String>)],
    connections: usize,
    seconds: u64,
) -> (f64, f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let client = client.clone();
            let urls = urls.to_vec();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = c;
                while Instant::now() < deadline {
                    let (url, etag) = &urls[n % urls.len()];
                    n += 1;
                    let t = Instant::now();
                    let mut request = client.get(url).header("Accept-Encoding", "gzip");
                    if let Some(etag) = etag {
                        request = request.header("If-None-Match", etag);
                    }
                    let response = request.send().await.unwrap();
                    assert!(response.status().is_success() || response.status().as_u16() == 304);
                    response.bytes().await.unwrap();
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    (
        all.len() as f64 / elapsed,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    )
}

/// A compressed `size`x`size` RGB PNG: a gradient with noise, so that it compresses about
/// as well as a real application icon (a few KB at 64 px, ~10-20 KB at 128 px).
pub fn icon_png(seed: u64, size: u32) -> Vec<u8> {
    // Filter type 1 (Sub) on every row, as PNG encoders do for gradients: each byte is
    // stored as its difference to the pixel on its left.
    let mut raw = Vec::with_capacity((size * (size * 3 + 1)) as usize);
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for y in 0..size {
        raw.push(1);
        let mut left = [0u8; 3];
        for x in 0..size {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((state >> 33) % 4) as u8;
            let r = ((x * 255 / size) as u8)
                .wrapping_add(seed as u8)
                .wrapping_add(noise);
            let g = ((y * 255 / size) as u8).wrapping_add(noise / 2);
            let b = (((x + y) * 127 / size) as u8).wrapping_add((seed >> 8) as u8);
            let pixel = [r, g, b];
            for c in 0..3 {
                raw.push(pixel[c].wrapping_sub(left[c]));
            }
            left = pixel;
        }
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = encoder.write_all(&raw);
    let idat = encoder.finish().unwrap_or_default();
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = size.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&size.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    for (kind, data) in [
        (&b"IHDR"[..], ihdr),
        (&b"IDAT"[..], idat),
        (&b"IEND"[..], Vec::new()),
    ] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(&data);
        let mut crc = flate2::Crc::new();
        crc.update(&body);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    out
}
