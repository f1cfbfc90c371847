//! The harness's output: a table shaped like Dynamo's Table 2, raw figures as JSON, and an SVG
//! plot of the latency distributions.

use anyhow::Result;
use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;
use std::path::Path;

/// Figures of one mode over all its phases.
#[derive(Clone, Debug, Serialize)]
pub struct ModeFigures {
    pub mode: String,
    pub ops_per_sec: f64,
    pub read: Latencies,
    pub update: Latencies,
    pub errors: u64,
    /// All processes' CPU time per operation (servers and harness), in µs.
    pub cpu_us_per_op: Option<f64>,
}

/// Latencies in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latencies {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
}

impl Latencies {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Latencies {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
        }
    }
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

/// Prints the comparison table.
pub fn print_table(direct: &ModeFigures, router: &ModeFigures) {
    println!(
        "\n{:<28} {:>14} {:>14} {:>12} {:>12} {:>10}",
        "", "99.9th read", "99.9th write", "avg read", "avg write", "ops/s"
    );
    for m in [router, direct] {
        let name = if m.mode == "direct" {
            "client-driven (direct)"
        } else {
            "router (any node)"
        };
        println!(
            "{:<28} {:>14} {:>14} {:>12} {:>12} {:>10.0}",
            name,
            ms(m.read.p999 as f64),
            ms(m.update.p999 as f64),
            ms(m.read.mean),
            ms(m.update.mean),
            m.ops_per_sec
        );
    }
    println!(
        "{:<28} {:>14} {:>14} {:>12} {:>12} {:>10}",
        "router / direct",
        ratio(router.read.p999 as f64, direct.read.p999 as f64),
        ratio(router.update.p999 as f64, direct.update.p999 as f64),
        ratio(router.read.mean, direct.read.mean),
        ratio(router.update.mean, direct.update.mean),
        ratio(direct.ops_per_sec, router.ops_per_sec).replace('x', "x (direct/router)")
    );
    println!(
        "Dynamo, Table 2: 99.9th read 68.9 vs 30.4 ms (2.27x), average read 3.9 vs 1.55 ms (2.5x)"
    );
    println!(
        "\n{:<10} {:>10} {:>10} {:>10} {:>10}   {:>10} {:>10}",
        "mode", "read p50", "read p99", "write p50", "write p99", "reads", "writes"
    );
    for m in [direct, router] {
        println!(
            "{:<10} {:>10} {:>10} {:>10} {:>10}   {:>10} {:>10}",
            m.mode,
            ms(m.read.p50 as f64),
            ms(m.read.p99 as f64),
            ms(m.update.p50 as f64),
            ms(m.update.p99 as f64),
            m.read.count,
            m.update.count
        );
    }
}

/// Prints ringkv's modes beside the peer, with ringkv direct's ratios to it: higher is better
/// for ringkv in every ratio (ops/s over the peer's; the peer's latency and CPU over ringkv's).
pub fn print_peer(systems: &[&ModeFigures], peer: &ModeFigures) {
    println!(
        "\n{:<16} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "system",
        "ops/s",
        "read p50",
        "read p99",
        "read 99.9",
        "upd. p50",
        "upd. p99",
        "upd. 99.9",
        "CPU/op"
    );
    let cpu = |m: &ModeFigures| {
        m.cpu_us_per_op
            .map_or("-".into(), |us| format!("{us:.0} µs"))
    };
    for m in systems.iter().copied().chain([peer]) {
        println!(
            "{:<16} {:>9.0} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            m.mode,
            m.ops_per_sec,
            ms(m.read.p50 as f64),
            ms(m.read.p99 as f64),
            ms(m.read.p999 as f64),
            ms(m.update.p50 as f64),
            ms(m.update.p99 as f64),
            ms(m.update.p999 as f64),
            cpu(m)
        );
    }
    for m in systems {
        println!(
            "{:<16} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            format!("{} vs {}", m.mode, peer.mode),
            ratio(m.ops_per_sec, peer.ops_per_sec),
            ratio(peer.read.p50 as f64, m.read.p50 as f64),
            ratio(peer.read.p99 as f64, m.read.p99 as f64),
            ratio(peer.read.p999 as f64, m.read.p999 as f64),
            ratio(peer.update.p50 as f64, m.update.p50 as f64),
            ratio(peer.update.p99 as f64, m.update.p99 as f64),
            ratio(peer.update.p999 as f64, m.update.p999 as f64),
            match (peer.cpu_us_per_op, m.cpu_us_per_op) {
                (Some(p), Some(r)) => ratio(p, r),
                _ => "-".into(),
            }
        );
    }
    println!("(ratios: ops/s over the peer's; the peer's latency and CPU over this system's)");
}

/// Writes an SVG of latency by percentile (x: 0%, 90%, 99%, 99.9%) for each mode and op.
pub fn plot(path: &Path, series: &[(&str, &Histogram<u64>)]) -> Result<()> {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_ms = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(_, h)| h.value_at_quantile(0.999) as f64 / 1000.0)
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "ringkv latency by percentile: client-driven vs router",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..3.0, 0f64..max_ms)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| format!("{:.1}%", 100.0 * (1.0 - 10f64.powf(-x))))
        .draw()?;
    let colors = [RED, BLUE, MAGENTA, CYAN];
    for (i, (name, h)) in series.iter().enumerate() {
        if h.is_empty() {
            continue;
        }
        let color = colors[i % colors.len()];
        let points = (0..=300).map(|s| {
            let x = s as f64 / 100.0;
            let q = 1.0 - 10f64.powf(-x);
            (x, h.value_at_quantile(q.min(0.999)) as f64 / 1000.0)
        });
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}
