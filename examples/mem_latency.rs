//! What one random cache-line read costs on this machine, for tables of
//! growing size: the floor under any flow lookup that misses the cache.
//!
//!     cargo run --release --example mem_latency
//!
//! For each size it reads 8M random 64-byte lines two ways:
//! - independent: the addresses do not depend on earlier reads, so the CPU
//!   overlaps as many misses as it can (what a batched lookup can hope for);
//! - dependent: each address depends on the previous read (a pointer chase:
//!   the latency of one miss, what a lookup chain pays per step).
//!
//! Sizes are powers of two so that the index is a mask, not a division.

use std::time::Instant;

const READS: usize = 8 << 20;

fn main() {
    println!("{:>8} {:>14} {:>14}", "table", "independent", "dependent");
    for mib in [1usize, 4, 16, 128, 512] {
        let lines = (mib << 20) / 64;
        let mask = lines - 1;
        let table: Vec<[u64; 8]> = (0..lines).map(|i| [i as u64; 8]).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let idx: Vec<u32> = (0..READS)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x as usize & mask) as u32
            })
            .collect();

        let t = Instant::now();
        let mut sum = 0u64;
        for &i in &idx {
            sum = sum.wrapping_add(table[i as usize][0]);
        }
        let independent = t.elapsed().as_secs_f64() * 1e9 / READS as f64;

        let chase = READS / 8;
        let t = Instant::now();
        let mut carry = 0usize;
        for &i in &idx[..chase] {
            // The read's value (its own index, so 0 or 1 after the mask)
            // feeds the next address: the reads cannot overlap.
            let v = table[(i as usize ^ carry) & mask][0];
            sum = sum.wrapping_add(v);
            carry = (v & 1) as usize;
        }
        let dependent = t.elapsed().as_secs_f64() * 1e9 / chase as f64;
        println!(
            "{:>5} MiB {:>11.1} ns {:>11.1} ns",
            mib, independent, dependent
        );
        std::hint::black_box(sum);
    }
}
