//! Waiter registry cost at scale: 100,000 held reads over 100 projections (one log,
//! one instance each), then a stream of checkpoint advances that each release ~1,000
//! of them. Reports CPU per wake, the cost of a register + deregister (`wait_for` then
//! drop, the path of a read that hangs up), and heap bytes per registered waiter.
//!
//! Run: `cargo bench --bench waiters -- --warm-up-time 1 --measurement-time 3`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant as StdInstant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use tidemark::checkpoint::{Projection, Wait, Waiter};
use tidemark::config::SourceKind;
use tidemark::position::PositionVector;
use tokio::time::Instant;

const PROJECTIONS: usize = 100;
const PER_PROJECTION: usize = 1_000;
/// Positions one advance moves a checkpoint by; every waiter of a batch sits in the
/// window `(checkpoint, checkpoint + STEP]`, so one advance releases the whole batch.
const STEP: u64 = 1_000;

/// Counts live heap bytes, to report memory per waiter.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A waker that counts wakes, standing in for a held request's task.
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn at(pos: u64) -> PositionVector {
    std::iter::once(("log", pos)).collect()
}

struct World {
    projections: Vec<Projection>,
    /// Per projection: its checkpoint and its held waiters.
    checkpoints: Vec<u64>,
    held: Vec<Vec<Waiter>>,
    waker: Waker,
    rng: rand::rngs::StdRng,
}

impl World {
    fn new() -> World {
        let logs = vec!["log".to_string()];
        let mut world = World {
            projections: (0..PROJECTIONS)
                .map(|k| Projection::new(format!("p{k}"), &logs, &[]))
                .collect(),
            checkpoints: vec![0; PROJECTIONS],
            held: (0..PROJECTIONS).map(|_| Vec::new()).collect(),
            waker: Waker::from(Arc::new(CountingWaker(AtomicUsize::new(0)))),
            rng: rand::rngs::StdRng::seed_from_u64(7),
        };
        let now = Instant::now();
        for k in 0..PROJECTIONS {
            world.projections[k].apply(None, &at(0), SourceKind::Push, now);
            world.refill(k);
        }
        world
    }

    /// Registers a fresh batch of waiters on projection `k`, spread over the next
    /// window, each polled once (as its request task would be).
    fn refill(&mut self, k: usize) {
        let base = self.checkpoints[k];
        let mut cx = Context::from_waker(&self.waker);
        self.held[k].clear();
        for _ in 0..PER_PROJECTION {
            let pos = base + self.rng.gen_range(1..=STEP);
            if let Wait::Pending(mut w) = self.projections[k].wait_for(&at(pos)) {
                let _ = Pin::new(&mut w).poll(&mut cx);
                self.held[k].push(w);
            }
        }
    }

    /// Advances projection `k` by one window; returns the waiters released.
    fn advance(&mut self, k: usize, now: Instant) -> usize {
        self.checkpoints[k] += STEP;
        let cp = at(self.checkpoints[k]);
        self.projections[k]
            .apply(None, &cp, SourceKind::Push, now)
            .woken
    }
}

fn wakes(c: &mut Criterion) {
    let before = LIVE.load(Ordering::Relaxed);
    let mut world = World::new();
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    let held: usize = world.held.iter().map(Vec::len).sum();
    println!(
        "waiters: {held} held over {PROJECTIONS} projections, {} heap bytes per held waiter (index + future)",
        bytes / held.max(1) as isize
    );

    let mut group = c.benchmark_group("waiters");
    group.throughput(Throughput::Elements(PER_PROJECTION as u64));
    let mut total_woken = 0usize;
    let mut total_time = Duration::ZERO;
    let mut next = 0usize;
    group.bench_function("advance_releasing_1000_of_100k", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let now = Instant::now();
            for _ in 0..iters {
                let k = next % PROJECTIONS;
                next += 1;
                let start = StdInstant::now();
                let woken = world.advance(k, now);
                spent += start.elapsed();
                total_woken += woken;
                world.refill(k);
            }
            total_time += spent;
            spent
        })
    });
    println!(
        "waiters: {:.0} ns CPU per wake ({total_woken} wakes measured)",
        total_time.as_nanos() as f64 / total_woken.max(1) as f64
    );

    group.throughput(Throughput::Elements(1));
    let mut pos = 0u64;
    let target = &world.projections[0];
    let base = world.checkpoints[0];
    group.bench_function("wait_for_then_drop_among_100k", |b| {
        b.iter(|| {
            pos = pos % STEP + 1;
            let w = target.wait_for(&at(base + pos));
            drop(std::hint::black_box(w));
        })
    });
    group.finish();
}

criterion_group!(benches, wakes);
criterion_main!(benches);
