//! Position vector costs on the hot paths: parsing a `Write-Position` header, the
//! `covers` check of every read, the token merge of every write, and formatting.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tidemark::position::PositionVector;

const TEXT: &str = "users=1234,orders=88,billing=7";

fn bench(c: &mut Criterion) {
    let v = PositionVector::parse(TEXT, None).expect("valid");
    let behind = PositionVector::parse("users=1000,orders=88", None).expect("valid");
    let ahead =
        PositionVector::parse("users=2000,orders=90,billing=7,search=3", None).expect("valid");

    let mut g = c.benchmark_group("position");
    g.bench_function("parse/3 logs", |b| {
        b.iter(|| PositionVector::parse(black_box(TEXT), black_box(None)))
    });
    g.bench_function("covers/true", |b| {
        b.iter(|| black_box(&v).covers(black_box(&behind)))
    });
    g.bench_function("covers/false", |b| {
        b.iter(|| black_box(&v).covers(black_box(&ahead)))
    });
    g.bench_function("merge/3+4 logs", |b| {
        b.iter_batched_ref(
            || v.clone(),
            |m| m.merge(black_box(&ahead)),
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("to_string/3 logs", |b| b.iter(|| black_box(&v).to_string()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
