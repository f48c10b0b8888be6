//! Builds the VPP side of the plugin when VPP's headers are found: runs
//! vppapigen on api/affinity.api, generates the C error list from the
//! core's counters (`affinity_counters.h`), compiles the C shim's files
//! with `cc`, and runs bindgen over the shim's header. Without VPP only the
//! Rust library is built, and this says so in one line.

#[cfg(feature = "vpp")]
use std::path::{Path, PathBuf};
#[cfg(feature = "vpp")]
use std::process::Command;

#[cfg(feature = "vpp")]
fn find_vpp() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("VPP_PREFIX").filter(|p| !p.is_empty()) {
        candidates.push(p.into());
    }
    candidates.extend(["/opt/vpp", "/usr/local", "/usr"].map(PathBuf::from));
    candidates
        .into_iter()
        .find(|p| p.join("include/vnet/vnet.h").exists())
}

#[cfg(feature = "vpp")]
fn vppapigen(prefix: &Path, args: &[&str]) -> bool {
    let gen = [prefix.join("bin/vppapigen"), PathBuf::from("vppapigen")]
        .into_iter()
        .find(|p| p.exists() || p.as_os_str() == "vppapigen")
        .unwrap_or_default();
    // vppapigen needs Debian's python3 (with python3-ply), not pyenv's.
    Command::new(gen)
        .args(args)
        .env("PATH", "/usr/bin:/bin")
        .status()
        .is_ok_and(|s| s.success())
}

fn main() {
    println!("cargo:rerun-if-env-changed=VPP_PREFIX");
    println!("cargo:rerun-if-changed=../c-shim");
    println!("cargo:rerun-if-changed=../api/affinity.api");
    println!("cargo:rustc-check-cfg=cfg(affinity_vpp)");
    // Plain builds (tests, the host agent) never link VPP code, and do not
    // even compile bindgen and cc: they are optional build dependencies.
    #[cfg(feature = "vpp")]
    build_plugin();
}

/// vppapigen, the C shim and bindgen, against the VPP install found.
#[cfg(feature = "vpp")]
fn build_plugin() {
    let Some(prefix) = find_vpp() else {
        println!("cargo:warning=affinity_plugin.so skipped: VPP headers (include/vnet/vnet.h) not found under $VPP_PREFIX, /opt/vpp, /usr/local or /usr; built and tested the Rust library only");
        return;
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let gen_dir = out.join("affinity");
    std::fs::create_dir_all(&gen_dir).expect("create OUT_DIR/affinity");
    let inc = prefix.join("include");
    let api = Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/affinity.api");
    let (inc_s, api_s, gen_s) = (
        inc.to_string_lossy(),
        api.to_string_lossy(),
        gen_dir.to_string_lossy(),
    );
    // vppapigen over api/affinity.api; `JSON` selects the .api.json output.
    let gen = |output: &Path, json: bool| {
        let output = output.to_string_lossy();
        let mut args = vec![
            "--includedir",
            &*inc_s,
            "--input",
            &*api_s,
            "--outputdir",
            &*gen_s,
            "--output",
            &*output,
        ];
        if json {
            args.insert(0, "JSON");
        }
        vppapigen(&prefix, &args)
    };
    let header = gen_dir.join("affinity.api.h");
    if !gen(&header, false) {
        println!("cargo:warning=affinity_plugin.so skipped: vppapigen failed on api/affinity.api (it needs Debian's python3-ply)");
        return;
    }
    // The .api.json for vpp_papi goes next to the built plugin (target/<profile>/).
    let profile_dir = out
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out.clone());
    let json = profile_dir.join("affinity.api.json");
    if !gen(&json, true) {
        println!(
            "cargo:warning=vppapigen JSON failed; the plugin builds without affinity.api.json"
        );
    }
    let version = std::fs::read_to_string(inc.join("vpp/app/version.h"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.contains("VPP_BUILD_VER"))
                .and_then(|l| l.split('"').nth(1))
                .map(str::to_string)
        })
        .unwrap_or_default();
    println!("cargo:rustc-env=AFFINITY_VPP_BUILD_VER={version}");
    let counters_h = out.join("affinity_counters.h");
    std::fs::write(&counters_h, counters_header()).expect("write affinity_counters.h");
    let c_files: Vec<PathBuf> = std::fs::read_dir("../c-shim")
        .expect("read c-shim/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    cc::Build::new()
        .files(&c_files)
        .include(&inc)
        .include(&out)
        .include("../c-shim")
        .flag("-march=corei7")
        .flag("-fno-common")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-empty-body")
        .flag_if_supported("-Wno-sign-compare")
        .flag_if_supported("-Wno-address-of-packed-member")
        .flag_if_supported("-Wno-ignored-qualifiers")
        .define("CLIB_DEBUG", "0")
        .opt_level(2)
        .cargo_metadata(false)
        .compile("affinity_shim");
    // Only the cdylib gets the shim (whole, for its constructors); binaries
    // that use the Rust library must not pull in VPP symbols.
    println!("cargo:rustc-cdylib-link-arg=-Wl,--whole-archive");
    println!(
        "cargo:rustc-cdylib-link-arg={}",
        out.join("libaffinity_shim.a").display()
    );
    println!("cargo:rustc-cdylib-link-arg=-Wl,--no-whole-archive");
    let bindings = bindgen::Builder::default()
        .header("../c-shim/affinity_shim.h")
        .clang_arg(format!("-I{}", out.display()))
        .prepend_enum_name(false)
        .allowlist_function("affinity_shim_.*")
        .allowlist_type("affinity_.*")
        .allowlist_var("AFFINITY_.*")
        .generate()
        .expect("bindgen over c-shim/affinity_shim.h");
    bindings
        .write_to_file(out.join("shim.rs"))
        .expect("write shim.rs");
    println!("cargo:rustc-cfg=affinity_vpp");
    println!(
        "cargo:warning=affinity_plugin.so: building the VPP plugin against {} (VPP {version})",
        prefix.display()
    );
}

/// `affinity_counters.h`: the core's counters (`Counter::ALL`, in order) as
/// the C side's error enum (`AFFINITY_ERROR_<NAME>`, from the counter's
/// name, `-` as `_`) and `foreach_affinity_error` for the node's error
/// counters. Severity, for `show errors`: a `drop-*` counter is an error,
/// the rest information.
#[cfg(feature = "vpp")]
fn counters_header() -> String {
    use affinity_forwarding_agent::Counter;
    use std::fmt::Write;
    let sym = |c: Counter| c.name().replace('-', "_").to_uppercase();
    let mut h = String::from(
        "/* Generated by vpp-plugin/build.rs from the forwarding-agent core's\n   \
         counters (forwarding-agent/src/counters.rs): do not edit. */\n\
         #ifndef AFFINITY_COUNTERS_H\n#define AFFINITY_COUNTERS_H\n\n\
         typedef enum affinity_error\n{\n",
    );
    for (i, &c) in Counter::ALL.iter().enumerate() {
        let _ = writeln!(h, "  AFFINITY_ERROR_{} = {i},", sym(c));
    }
    let _ = writeln!(
        h,
        "  AFFINITY_N_ERROR = {},\n}} affinity_error_t;\n",
        Counter::ALL.len()
    );
    h.push_str("#define foreach_affinity_error");
    for &c in Counter::ALL {
        let severity = if c.name().starts_with("drop-") {
            "ERROR"
        } else {
            "INFO"
        };
        let _ = write!(h, " \\\n  _ ({}, \"{}\", {severity})", sym(c), c.name());
    }
    h.push_str("\n\n#endif\n");
    h
}
