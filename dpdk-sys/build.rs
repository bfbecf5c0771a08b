//! Finds the system DPDK with pkg-config, compiles the `sluice_*` C shim with
//! DPDK's own compiler flags, and generates bindings with bindgen.
//!
//! Needs `libdpdk-dev` (22.11), `libclang-dev` and `pkg-config`
//! (`apt-get install -y libdpdk-dev libclang-dev pkg-config`).

use std::env;
use std::path::PathBuf;
use std::process::Command;

const MIN_DPDK: &str = "22.11";

fn main() {
    println!("cargo:rerun-if-changed=csrc/sluice_shim.h");
    println!("cargo:rerun-if-changed=csrc/sluice_shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    // Linking: pkg-config's --libs names every DPDK library; the dynamically
    // linked EAL then loads the PMDs from its plugin directory by itself, so no
    // whole-archive tricks are needed (those are only for static linking).
    let dpdk = pkg_config::Config::new()
        .atleast_version(MIN_DPDK)
        .probe("libdpdk")
        .unwrap_or_else(|err| {
            panic!(
                "dpdk-sys needs DPDK >= {MIN_DPDK} visible to pkg-config \
                 (Debian: apt-get install -y libdpdk-dev libclang-dev pkg-config): {err}"
            )
        });
    println!("cargo:version={}", dpdk.version);

    // The pkg-config crate drops flags it does not model, but DPDK's cflags
    // carry `-include rte_config.h` and `-march=...`, without which the headers
    // do not compile (or compile to a different ABI), so take them verbatim.
    let cflags = dpdk_cflags();

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let csrc = manifest_dir.join("csrc");

    let mut shim = cc::Build::new();
    shim.file(csrc.join("sluice_shim.c"))
        .include(&csrc)
        .define("ALLOW_EXPERIMENTAL_API", None)
        .warnings(false)
        .opt_level(3);
    for flag in &cflags {
        shim.flag(flag);
    }
    shim.compile("sluice_dpdk_shim");

    let mut builder = bindgen::Builder::default()
        .header(csrc.join("sluice_shim.h").to_string_lossy())
        .clang_arg(format!("-I{}", csrc.display()))
        .clang_arg("-DALLOW_EXPERIMENTAL_API")
        .clang_args(&cflags)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .allowlist_function("sluice_.*")
        .allowlist_function("rte_eal_.*")
        .allowlist_function("rte_eth_.*")
        .allowlist_function("rte_pktmbuf_.*")
        .allowlist_function("rte_mbuf_.*")
        .allowlist_function("rte_mempool_.*")
        .allowlist_function("rte_thash_.*")
        .allowlist_function("rte_thread_.*")
        .allowlist_function("rte_lcore_.*")
        .allowlist_function("rte_socket_.*")
        .allowlist_function("rte_dev_.*")
        .allowlist_function("rte_strerror")
        .allowlist_type("rte_mbuf")
        .allowlist_type("rte_mempool")
        .allowlist_type("rte_eth_.*")
        .allowlist_var("SLUICE_.*")
        .allowlist_var("RTE_ETH_.*")
        .allowlist_var("RTE_MAX_ETHPORTS")
        .allowlist_var("RTE_MAX_LCORE")
        .allowlist_var("RTE_ETH_NAME_MAX_LEN")
        .allowlist_var("RTE_MBUF_.*")
        .allowlist_var("SOCKET_ID_ANY")
        .allowlist_var("LCORE_ID_ANY")
        // Packed headers whose laid-out Rust form is rejected with E0588
        // (packed containing aligned); nothing in sluice reads them through FFI.
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .prepend_enum_name(false)
        .derive_default(true)
        .derive_debug(true)
        .impl_debug(false)
        .generate_comments(false)
        .layout_tests(true);
    // bindgen's clang must see the same target features as gcc did.
    if let Ok(target) = env::var("TARGET") {
        builder = builder.clang_arg(format!("--target={target}"));
    }
    let bindings = builder
        .generate()
        .expect("bindgen failed on DPDK headers; is libclang-dev installed?");
    bindings
        .write_to_file(out_dir.join("bindings.rs"))
        .expect("write bindings.rs to OUT_DIR");
}

fn dpdk_cflags() -> Vec<String> {
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
    let output = Command::new(&pkg_config)
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|err| panic!("could not run {pkg_config}: {err}"));
    assert!(
        output.status.success(),
        "{pkg_config} --cflags libdpdk failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // `-include rte_config.h` is two words that must stay in order; joining
    // them keeps cc from deduplicating or reordering a lone `-include`.
    let words: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut flags = Vec::with_capacity(words.len());
    let mut iter = words.into_iter();
    while let Some(word) = iter.next() {
        if word == "-include" {
            if let Some(file) = iter.next() {
                flags.push(format!("-include{file}"));
            }
        } else {
            flags.push(word);
        }
    }
    flags
}
