//! Benchmark of the directory index: builds an index of synthetic profiles, then measures the
//! build rate, query latencies per query class, how fast a write becomes searchable, the time to
//! reopen the index, and memory. Run it in release mode:
//!
//! ```text
//! cargo run --release -p caduceus-bench --bin directory_bench -- --profiles 1000000
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use caduceus_bench::directory::{ProfileGenerator, QueryGenerator};
use caduceus_directory::{
    DirectoryBackend, DirectoryEntry, DirectoryIndex, IndexConfig, RebuildProgress, SearchRequest,
    VerificationLevel,
};
use clap::Parser;

/// Build-time and latency goals, checked at the end of a run.
const REBUILD_GOAL: Duration = Duration::from_secs(120);
const P99_GOAL: Duration = Duration::from_millis(10);

#[derive(Parser)]
#[command(about = "Benchmark the directory index with synthetic profiles")]
struct Args {
    /// Number of synthetic profiles to index.
    #[arg(long, default_value_t = 1_000_000)]
    profiles: u64,
    /// Number of measured queries per query class.
    #[arg(long, default_value_t = 3_000)]
    queries: usize,
    /// Seed of the profile and query generators; equal seeds give equal data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Folder for the index, deleted and recreated first; a temporary folder when absent.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the index already in --dir instead of rebuilding it, to repeat query runs.
    #[arg(long)]
    reuse: bool,
    /// Query classes to run: free, filtered, typeahead, letter, exact. All when absent.
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    /// Memory of the index writer in MiB, shared by its threads.
    #[arg(long, default_value_t = 256)]
    writer_memory_mib: usize,
    /// Print up to this many queries per class that found nothing, to check the generator.
    #[arg(long, default_value_t = 0)]
    print_empty: usize,
    /// Print this many of the slowest queries per class.
    #[arg(long, default_value_t = 0)]
    print_slowest: usize,
}

/// Reads a `kB` field such as `VmRSS` from `/proc/self/status`, in MiB.
fn proc_status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn print_memory(when: &str) {
    let rss = proc_status_mib("VmRSS:").unwrap_or(f64::NAN);
    let peak = proc_status_mib("VmHWM:").unwrap_or(f64::NAN);
    println!("memory {when}: VmRSS {rss:.0} MiB, VmHWM {peak:.0} MiB");
}

fn folder_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries.flatten().filter_map(|entry| entry.metadata().ok()).map(|metadata| metadata.len()).sum()
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

struct ClassResult {
    name: &'static str,
    p99: Duration,
}

/// Runs the queries one after another and prints their latency distribution.
fn run_class(
    index: &DirectoryIndex,
    name: &'static str,
    requests: &[SearchRequest],
    print_empty: usize,
    print_slowest: usize,
) -> anyhow::Result<ClassResult> {
    let mut latencies = Vec::with_capacity(requests.len());
    let mut slowest: Vec<(Duration, &SearchRequest, u64)> = Vec::new();
    let mut totals = 0u64;
    let mut empty = 0usize;
    for request in requests {
        let started = Instant::now();
        let results =
            index.search(request).with_context(|| format!("query {:?}", request.query))?;
        let elapsed = started.elapsed();
        latencies.push(elapsed);
        if print_slowest > 0 {
            slowest.push((elapsed, request, results.total));
            slowest.sort_by_key(|(elapsed, _, _)| std::cmp::Reverse(*elapsed));
            slowest.truncate(print_slowest);
        }
        totals += results.total;
        if results.total == 0 {
            if empty < print_empty {
                println!("  no hits: {:?} {:?}", request.query, request.filters);
            }
            empty += 1;
        }
    }
    latencies.sort_unstable();
    let mean = latencies.iter().sum::<Duration>() / latencies.len().max(1) as u32;
    let p99 = percentile(&latencies, 0.99);
    println!(
        "{name:<24} n={:<5} p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  mean {:>6.2} ms  \
         mean total {:>8.0}  no hits {:>4.1} %",
        latencies.len(),
        millis(percentile(&latencies, 0.50)),
        millis(percentile(&latencies, 0.90)),
        millis(p99),
        millis(*latencies.last().unwrap_or(&Duration::ZERO)),
        millis(mean),
        totals as f64 / latencies.len().max(1) as f64,
        empty as f64 * 100.0 / latencies.len().max(1) as f64,
    );
    for (elapsed, request, total) in slowest {
        println!(
            "  slow: {:>6.2} ms, {total:>7} hits: {:?} {:?}",
            millis(elapsed),
            request.query,
            request.filters
        );
    }
    Ok(ClassResult { name, p99 })
}

/// Upserts fresh entries and polls until each is searchable.
fn measure_visibility(index: &DirectoryIndex, rounds: usize) -> anyhow::Result<Vec<Duration>> {
    let mut delays = Vec::with_capacity(rounds);
    // A fresh name per run, so that a probe left in a reused index is not found instead.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or_default();
    for round in 0..rounds {
        let name = format!("Visibility Probe{run}x{round}");
        let entry = DirectoryEntry {
            user_id: format!("@visibility.probe{round}:bench.example"),
            display_name: Some(name.clone()),
            avatar_url: None,
            professions: vec!["nurse".to_owned()],
            specialties: Vec::new(),
            organisations: Vec::new(),
            areas: Vec::new(),
            level: VerificationLevel::Identity,
            listed: true,
        };
        let request = SearchRequest::new(name.to_lowercase());
        let started = Instant::now();
        index.upsert(&entry)?;
        while index.search(&request)?.total == 0 {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("entry {} not searchable after 10 s", entry.user_id);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        delays.push(started.elapsed());
        // Spread the writes so each one waits for its own commit.
        std::thread::sleep(Duration::from_millis(300));
    }
    delays.sort_unstable();
    Ok(delays)
}

/// Returns the 1-minute load average, to judge how much other work shared the machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Rebuilds the index from generated profiles and prints the build figures.
fn build(index: &DirectoryIndex, args: &Args) -> anyhow::Result<RebuildProgress> {
    // Generation alone, so that it can be separated from indexing in the build rate.
    let sample = args.profiles.min(200_000);
    let started = Instant::now();
    let generated = ProfileGenerator::new(args.seed, sample).count();
    let generation_rate = generated as f64 / started.elapsed().as_secs_f64();
    println!("generation alone: {generation_rate:.0} profiles/s ({generated} profiles)");

    let progress_every = (args.profiles / 10).max(1);
    let report =
        index.rebuild_from(ProfileGenerator::new(args.seed, args.profiles), |progress| {
            if progress.finished || progress.indexed.is_multiple_of(progress_every) {
                println!(
                    "  rebuild: {:>9} indexed, {:>6.1} s{}",
                    progress.indexed,
                    progress.elapsed.as_secs_f64(),
                    if progress.finished { ", committed" } else { "" }
                );
            }
        })?;
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "rebuild: {} profiles in {seconds:.1} s = {:.0} profiles/s (generation included), {} skipped",
        report.indexed,
        report.indexed as f64 / seconds,
        report.skipped
    );
    Ok(report)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; run with --release for meaningful numbers");
    }

    let temporary = tempfile::tempdir()?;
    let path = args.dir.clone().unwrap_or_else(|| temporary.path().join("directory"));
    let reuse = args.reuse && path.join("meta.json").exists();
    if path.exists() && !reuse {
        std::fs::remove_dir_all(&path).with_context(|| format!("deleting {}", path.display()))?;
    }
    let cores = std::thread::available_parallelism().map(|cores| cores.get()).unwrap_or(1);
    println!(
        "directory_bench: {} profiles, {} queries per class, seed {}, {} cores, writer memory {} MiB, index in {}",
        args.profiles,
        args.queries,
        args.seed,
        cores,
        args.writer_memory_mib,
        path.display()
    );

    let config = IndexConfig {
        writer_memory_bytes: args.writer_memory_mib * 1024 * 1024,
        ..IndexConfig::default()
    };
    let (index, status) = DirectoryIndex::open_or_create(&path, config.clone())?;
    println!("opened: {status:?}, {} entries", index.num_entries());
    let report = if reuse { None } else { Some(build(&index, &args)?) };
    println!(
        "index: {:.0} MiB on disk, {} segments",
        folder_size(&path) as f64 / (1024.0 * 1024.0),
        index.segment_count()
    );
    print_memory("after opening and building");

    let mut queries = QueryGenerator::new(args.seed.wrapping_add(1));
    let free_text: Vec<SearchRequest> = (0..args.queries).map(|_| queries.free_text()).collect();
    let filtered: Vec<SearchRequest> = (0..args.queries).map(|_| queries.filtered()).collect();
    let type_ahead: Vec<SearchRequest> = (0..args.queries).map(|_| queries.type_ahead(2)).collect();
    let one_letter: Vec<SearchRequest> = (0..args.queries / 3)
        .map(|_| queries.type_ahead(1))
        .map(|mut request| {
            request.query.truncate(request.query.chars().next().map_or(0, char::len_utf8));
            request
        })
        .collect();
    // The same type-ahead queries counting every match, to show what an exact total costs.
    let type_ahead_exact: Vec<SearchRequest> = type_ahead
        .iter()
        .take(args.queries / 3)
        .map(|request| SearchRequest { exact_total: true, ..request.clone() })
        .collect();
    // Name, key for --classes, queries, and whether the latency goal applies.
    let classes: [(&'static str, &str, &[SearchRequest], bool); 5] = [
        ("free text", "free", &free_text, true),
        ("filtered + 4 facets", "filtered", &filtered, true),
        ("type-ahead (2+ letters)", "typeahead", &type_ahead, true),
        ("type-ahead (1 letter)", "letter", &one_letter, true),
        ("type-ahead, exact total", "exact", &type_ahead_exact, false),
    ];
    let selected: Vec<_> = classes
        .into_iter()
        .filter(|(_, key, _, _)| {
            args.classes.is_empty() || args.classes.iter().any(|class| class == key)
        })
        .collect();

    // One unmeasured pass over part of each class pages in the index files.
    let warm_up = args.queries.min(500);
    for (_, _, requests, _) in &selected {
        for request in requests.iter().take(warm_up) {
            index.search(request)?;
        }
    }
    print_memory("after warm-up");

    println!(
        "queries (one at a time, {} segments, load average {} before):",
        index.segment_count(),
        load_average()
    );
    let mut results = Vec::with_capacity(selected.len());
    for (name, _, requests, has_goal) in &selected {
        let result = run_class(&index, name, requests, args.print_empty, args.print_slowest)?;
        if *has_goal {
            results.push(result);
        }
    }
    println!("load average after queries: {}", load_average());

    let delays = measure_visibility(&index, 20)?;
    println!(
        "write visibility (upsert until searchable, {} writes): median {:.0} ms, max {:.0} ms",
        delays.len(),
        millis(percentile(&delays, 0.5)),
        millis(*delays.last().unwrap_or(&Duration::ZERO))
    );
    print_memory("after queries");

    index.close()?;
    let started = Instant::now();
    let (index, status) = DirectoryIndex::open_or_create(&path, config)?;
    println!(
        "reopen: {status:?} in {:.0} ms, {} entries",
        millis(started.elapsed()),
        index.num_entries()
    );
    index.close()?;

    println!("goals:");
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    if let Some(report) = report {
        println!(
            "  full rebuild under {} s: {} ({:.1} s)",
            REBUILD_GOAL.as_secs(),
            verdict(report.elapsed < REBUILD_GOAL),
            report.elapsed.as_secs_f64()
        );
    }
    for class in &results {
        println!(
            "  {} p99 under {} ms: {} ({:.2} ms)",
            class.name,
            P99_GOAL.as_millis(),
            verdict(class.p99 < P99_GOAL),
            millis(class.p99)
        );
    }
    Ok(())
}
