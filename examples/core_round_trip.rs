//! How far apart the cores are: two threads hand a cache line back and forth and print the
//! round trip. On a virtual machine the host may place the vCPUs near each other or far apart
//! and move them every few seconds (the 2-vCPU VM of benches/README.md: about 60 ns near,
//! 340 ns far, more with another process busy); a 2-thread measurement means little without
//! it. `cargo run --release --example core_round_trip [ROUND_TRIPS]`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(200_000, |s| s.parse().expect("a count of round trips"));
    let flag = Arc::new(AtomicU64::new(0));
    let other = {
        let flag = flag.clone();
        std::thread::spawn(move || {
            for i in 0..n {
                while flag.load(Ordering::Acquire) != 2 * i + 1 {
                    std::hint::spin_loop();
                }
                flag.store(2 * i + 2, Ordering::Release);
            }
        })
    };
    let start = Instant::now();
    for i in 0..n {
        flag.store(2 * i + 1, Ordering::Release);
        while flag.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    other.join().expect("the other thread ends");
    println!("round trip {ns:.0} ns");
}
