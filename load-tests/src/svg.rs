//! Hand-written SVG charts: latency-by-percentile curves (a CDF with the tail
//! stretched: the x axis is "nines", 1 / (1 - p)) and grouped bar histograms.

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn frame(title: &str, out: &mut String) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12"><rect width="{W}" height="{H}" fill="white"/><text x="{x}" y="22" font-size="15" text-anchor="middle">{t}</text>"#,
        x = W / 2.0,
        t = esc(title)
    );
}

fn legend(names: &[String], out: &mut String) {
    for (i, n) in names.iter().enumerate() {
        let y = TOP + 10.0 + i as f64 * 18.0;
        let x = W - RIGHT + 15.0;
        let c = COLORS[i % COLORS.len()];
        let _ = write!(
            out,
            r#"<rect x="{x}" y="{y0}" width="12" height="12" fill="{c}"/><text x="{tx}" y="{ty}">{n}</text>"#,
            y0 = y - 10.0,
            tx = x + 18.0,
            ty = y,
            n = esc(n)
        );
    }
}

/// A nice upper bound for an axis.
fn nice(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(max.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= max {
            return m * mag;
        }
    }
    10.0 * mag
}

/// Latency by percentile: `series` are `(name, [(percentile, µs)])`; y in ms.
pub fn percentile_chart(title: &str, series: &[(String, Vec<(f64, u64)>)]) -> String {
    let mut out = String::new();
    frame(title, &mut out);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let max_nines = 5.0; // 99.999%
    let nines = |p: f64| (-(1.0 - (p / 100.0).min(0.99999)).log10()).clamp(0.0, max_nines);
    let ymax_ms = nice(
        series
            .iter()
            .flat_map(|(_, c)| c.iter().map(|(_, us)| *us as f64 / 1000.0))
            .fold(0.0, f64::max),
    );
    for (label, n) in [
        ("0%", 0.0),
        ("90%", 1.0),
        ("99%", 2.0),
        ("99.9%", 3.0),
        ("99.99%", 4.0),
        ("99.999%", 5.0),
    ] {
        let x = LEFT + pw * n / max_nines;
        let _ = write!(
            out,
            r##"<line x1="{x}" y1="{TOP}" x2="{x}" y2="{yb}" stroke="#ddd"/><text x="{x}" y="{ty}" text-anchor="middle">{label}</text>"##,
            yb = TOP + ph,
            ty = TOP + ph + 18.0
        );
    }
    for i in 0..=5 {
        let v = ymax_ms * i as f64 / 5.0;
        let y = TOP + ph - ph * i as f64 / 5.0;
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y}" x2="{xr}" y2="{y}" stroke="#ddd"/><text x="{tx}" y="{ty}" text-anchor="end">{v:.2}</text>"##,
            xr = LEFT + pw,
            tx = LEFT - 6.0,
            ty = y + 4.0
        );
    }
    let _ = write!(
        out,
        r#"<text x="{x}" y="{y}" text-anchor="middle">percentile</text><text x="16" y="{ym}" transform="rotate(-90 16 {ym})" text-anchor="middle">latency (ms)</text>"#,
        x = LEFT + pw / 2.0,
        y = H - 10.0,
        ym = TOP + ph / 2.0
    );
    for (i, (_, curve)) in series.iter().enumerate() {
        let pts: Vec<String> = curve
            .iter()
            .map(|(p, us)| {
                let x = LEFT + pw * nines(*p) / max_nines;
                let y = TOP + ph - ph * (*us as f64 / 1000.0 / ymax_ms).min(1.0);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{p}"/>"#,
            c = COLORS[i % COLORS.len()],
            p = pts.join(" ")
        );
    }
    let names: Vec<String> = series.iter().map(|(n, _)| n.clone()).collect();
    legend(&names, &mut out);
    out.push_str("</svg>\n");
    out
}

/// Grouped bars: `labels` on x, one bar per series per label (counts).
pub fn bar_chart(
    title: &str,
    labels: &[String],
    series: &[(String, Vec<u64>)],
    ylabel: &str,
) -> String {
    let mut out = String::new();
    frame(title, &mut out);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let ymax = nice(
        series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .max()
            .unwrap_or(1) as f64,
    );
    for i in 0..=5 {
        let v = ymax * i as f64 / 5.0;
        let y = TOP + ph - ph * i as f64 / 5.0;
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y}" x2="{xr}" y2="{y}" stroke="#ddd"/><text x="{tx}" y="{ty}" text-anchor="end">{v:.0}</text>"##,
            xr = LEFT + pw,
            tx = LEFT - 6.0,
            ty = y + 4.0
        );
    }
    let groups = labels.len().max(1) as f64;
    let gw = pw / groups;
    let bw = (gw * 0.8) / series.len().max(1) as f64;
    for (g, label) in labels.iter().enumerate() {
        let gx = LEFT + gw * g as f64;
        let _ = write!(
            out,
            r#"<text x="{x}" y="{y}" text-anchor="middle" font-size="10">{l}</text>"#,
            x = gx + gw / 2.0,
            y = TOP + ph + 16.0,
            l = esc(label)
        );
        for (s, (_, values)) in series.iter().enumerate() {
            let v = values.get(g).copied().unwrap_or(0) as f64;
            let h = ph * (v / ymax).min(1.0);
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{h:.1}" fill="{c}"/>"#,
                x = gx + gw * 0.1 + bw * s as f64,
                y = TOP + ph - h,
                c = COLORS[s % COLORS.len()]
            );
        }
    }
    let _ = write!(
        out,
        r#"<text x="{x}" y="{y}" text-anchor="middle">wait overhead, bucket upper bound (µs)</text><text x="16" y="{ym}" transform="rotate(-90 16 {ym})" text-anchor="middle">{yl}</text>"#,
        x = LEFT + pw / 2.0,
        y = H - 10.0,
        ym = TOP + ph / 2.0,
        yl = esc(ylabel)
    );
    let names: Vec<String> = series.iter().map(|(n, _)| n.clone()).collect();
    legend(&names, &mut out);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_svg_with_every_series_named() {
        let s = percentile_chart("t", &[("a<b".into(), vec![(0.0, 100), (99.0, 2000)])]);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a&lt;b") && s.contains("<polyline"));
        let b = bar_chart("t", &["100".into()], &[("x".into(), vec![3])], "reads");
        assert!(b.contains("<rect") && b.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn nice_rounds_up_to_1_2_2_5_5() {
        assert_eq!(nice(0.7), 1.0);
        assert_eq!(nice(1.7), 2.0);
        assert_eq!(nice(2.2), 2.5);
        assert_eq!(nice(420.0), 500.0);
    }
}
