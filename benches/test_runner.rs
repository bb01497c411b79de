//! 1,000 test cases over the sample rules (the sample suite's cases, repeated), run by the
//! test runner as `claimrules test` would. Target: well under 1 s per 1,000 cases.

use criterion::{criterion_group, criterion_main, Criterion};

use claimrules::rules::RuleSet;
use claimrules::testing::{Case, TestSuite};

const CASES: usize = 1_000;

fn thousand_cases() -> TestSuite {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let sample = TestSuite::load(&root).expect("the sample suite loads");
    let cases: Vec<Case> = sample
        .cases()
        .iter()
        .cycle()
        .take(CASES)
        .enumerate()
        .map(|(i, c)| {
            let mut c = c.clone();
            c.name = format!("{} #{i}", c.name);
            c
        })
        .collect();
    let set = RuleSet::load(&root).expect("the sample rules load");
    TestSuite::from_cases(set, cases)
}

fn bench(c: &mut Criterion) {
    let suite = thousand_cases();
    let report = suite.run();
    assert_eq!(report.results.len(), CASES);
    assert!(
        report.success(),
        "the sample suite must pass: {}",
        report.summary()
    );

    let mut group = c.benchmark_group("test_runner");
    group.sample_size(10);
    group.bench_function("1000_sample_cases", |b| b.iter(|| suite.run()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
