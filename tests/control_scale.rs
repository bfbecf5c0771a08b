//! Cost of one change at 1,000 services x 100 endpoints, split into its
//! parts (run with `cargo test --release --test control_scale -- --ignored
//! --nocapture`): the incremental rebuild on the control thread, and the
//! worker-side work a generation switch implies.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use sluice::service::{EndpointSpec, Generation, LinkSpec, Protocol, ServiceSpec, Topology};
use sluice::wire::MacAddr;

fn specs(services: usize, endpoints: usize) -> Vec<Arc<ServiceSpec>> {
    (0..services)
        .map(|s| {
            let mut spec = ServiceSpec::new(
                &format!("svc{s}"),
                Ipv4Addr::from(0xc613_0000 + s as u32),
                80,
                Protocol::Tcp,
            );
            spec.endpoints = (0..endpoints)
                .map(|i| {
                    EndpointSpec::new(Ipv4Addr::from(0x0ac8_0000 + 11 + i as u32), 1024 + s as u16)
                })
                .collect();
            Arc::new(spec)
        })
        .collect()
}

/// Endpoints per chunk of the generation's endpoint array.
const CHUNK: usize = 256;

#[test]
#[ignore = "measurement; run in release"]
fn one_change_at_scale() {
    let topo = Topology {
        links: vec![LinkSpec {
            name: "l".into(),
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            addr: Ipv4Addr::new(10, 200, 0, 254),
            prefix_len: 16,
        }],
        ..Default::default()
    };
    let mut specs = specs(1000, 100);
    let t = Instant::now();
    let mut g = Generation::build_shared(1, &topo, &specs).unwrap();
    println!("full build: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let mut times = vec![];
    let mut remaps = vec![];
    for n in 0..50u64 {
        let s = (n as usize * 37) % specs.len();
        let mut spec = (*specs[s]).clone();
        spec.endpoints[(n % 100) as usize].weight = 1 + (n % 3) as u32 + 1;
        specs[s] = Arc::new(spec);
        let t = Instant::now();
        let next = Generation::rebuild(&g, n + 2, &specs).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e6);
        // What a worker's counter remap does per switch: identity checks
        // over the endpoint chunks the new generation did not share.
        let t = Instant::now();
        let mut looked = 0usize;
        for r in next.changed_endpoints(&g) {
            for i in r {
                let e = g.endpoint(i);
                if e.is_hole() {
                    continue;
                }
                let key = g.service(e.service).key;
                if let Some(svc) = next.service_for(&key) {
                    if next.find_endpoint(svc, e.addr, e.port).is_some() {
                        looked += 1;
                    }
                }
            }
        }
        assert!(looked <= 2 * CHUNK, "{looked} endpoints looked at");
        let sharing = next.sharing(&g);
        assert!(sharing.endpoint_chunks.0 + 2 >= sharing.endpoint_chunks.1);
        assert_eq!(sharing.backend_shards.0, sharing.backend_shards.1);
        remaps.push(t.elapsed().as_secs_f64() * 1e6);
        g = next;
    }
    times.sort_by(f64::total_cmp);
    remaps.sort_by(f64::total_cmp);
    println!(
        "incremental rebuild (one weight change): p50 {:.0} us, p99 {:.0} us",
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
    println!(
        "worker-style remap (changed chunks of {} endpoints): p50 {:.0} us, p99 {:.0} us",
        g.endpoint_count(),
        remaps[remaps.len() / 2],
        remaps[remaps.len() * 99 / 100]
    );
}
