//! Resident memory of a full flow table.
//!
//! `cargo run --release --example flow_memory -- 10000000` builds a table for N flows, fills it,
//! and prints one JSON line: flows, capacity, rss_bytes (VmRSS growth from before the table was
//! created to after it was filled), bytes_per_flow, slot_bytes, and the table's own count of
//! allocated bytes (slab + index).

use sluice::flow::{FlowEntry, FlowKey, FlowState, FlowTable, Timeouts};

fn vm_rss_bytes() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status (Linux only): {e}"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS line in /proc/self/status")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("unparsable VmRSS line: {line}"))?;
    Ok(kib * 1024)
}

fn main() -> Result<(), String> {
    let flows: usize = match std::env::args().nth(1) {
        None => 1_000_000,
        Some(arg) => arg
            .parse()
            .map_err(|e| format!("flow count `{arg}` is not a positive integer: {e}"))?,
    };
    let before = vm_rss_bytes()?;
    let mut table: FlowTable =
        FlowTable::try_new(flows, Timeouts::default(), 0x5eed).map_err(|e| e.to_string())?;
    for i in 0..flows as u32 {
        let key = FlowKey {
            client_addr: 0x0a00_0000 ^ i.rotate_left(7),
            vip_addr: 0xc612_0064,
            client_port: 1024 + (i % 60_000) as u16,
            vip_port: 443,
            proto: 6,
        };
        let hash = table.hash(&key);
        let ins = table.insert(
            key,
            hash,
            FlowEntry::new(1, 80, FlowState::Established, 0),
            0,
        );
        if !matches!(ins, Some(i) if i.evicted.is_none()) {
            return Err(format!(
                "unexpected eviction at flow {i}: keys must be distinct"
            ));
        }
    }
    let after = vm_rss_bytes()?;
    let rss = after.saturating_sub(before);
    println!(
        "{{\"flows\":{},\"capacity\":{},\"rss_bytes\":{},\"bytes_per_flow\":{:.1},\"slot_bytes\":{},\"allocated_bytes\":{}}}",
        table.len(),
        table.capacity(),
        rss,
        rss as f64 / table.len() as f64,
        FlowTable::<FlowKey>::slot_bytes(),
        table.allocated_bytes()
    );
    Ok(())
}
