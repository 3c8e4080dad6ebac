//! The report as one self-contained HTML page (`anyedge sim FILE --html OUT`, or
//! `anyedge report REPORT.json --html OUT`): inline SVG plots drawn with plotters, no
//! script, no network. Per client group and traffic class, RTT CDFs (anycast against
//! direct) and loss and RTT over time with the faults marked; a map of POPs, regions and
//! client groups with each group's catchment and how faults moved it; backend health and
//! the control plane's leader and term over time; and the report's tables.
//!
//! It reads the JSON report (`serde_json::Value`), so an old report renders as well as a
//! fresh one.

use std::fmt::Write;

use plotters::prelude::*;
use serde_json::Value;

const ANYCAST: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const DIRECT: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const FAULT: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const SIZE: (u32, u32) = (560, 300);

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// The furthest a chart's axis reaches (seconds, milliseconds): a figure past it (a
/// hand-edited or corrupt report) is drawn at the axis' edge, as is every figure past
/// its chart's own axes, so that no coordinate overflows a pixel in plotters.
const AXIS_MAX: f64 = 1e9;

/// `v` within `lo..=hi` (at `lo` when not a number).
fn held(v: f64, lo: f64, hi: f64) -> f64 {
    if v.is_finite() { v.clamp(lo, hi) } else { lo }
}

/// A location's longitude and latitude on the map's axes.
fn lon_lat(location: &Value) -> (f64, f64) {
    (held(f(&location[1]), -180.0, 180.0), held(f(&location[0]), -90.0, 90.0))
}

/// A table cell's text: `-` for nothing.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => esc(s),
        other => other.to_string(),
    }
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// Draws into an SVG string; a drawing error leaves a note instead of a plot.
fn svg(
    size: (u32, u32),
    // String: plotters' errors are generic over the backend; the text only becomes a note.
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
) -> String {
    let mut out = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        let r = root.fill(&WHITE).map_err(|e| e.to_string()).and_then(|()| draw(&root));
        r.and_then(|()| root.present().map_err(|e| e.to_string()))
    };
    match result {
        Ok(()) => out,
        Err(e) => format!("<p class=note>(plot not drawn: {})</p>", esc(&e)),
    }
}

/// A path's histogram buckets: (upper bound ms, count), in order. Reports list only the
/// buckets that hold a round trip (older ones every bucket, zeros included).
fn buckets(path: &Value) -> Vec<(f64, f64)> {
    arr(&path["histogram_ms"]).iter().map(|b| (f(&b[0]), f(&b[1]))).filter(|b| b.1 > 0.0).collect()
}

/// Bucket lists merged: counts summed by upper bound.
fn merged<'a>(lists: impl Iterator<Item = &'a [(f64, f64)]>) -> Vec<(f64, f64)> {
    let mut sum: std::collections::BTreeMap<u64, f64> = std::collections::BTreeMap::new();
    for list in lists {
        for &(upper, count) in list {
            // Upper bounds are positive: their bits sort as the numbers do.
            *sum.entry(upper.to_bits()).or_default() += count;
        }
    }
    sum.into_iter().map(|(bits, count)| (f64::from_bits(bits), count)).collect()
}

/// The CDF of buckets as a step: (ms, fraction at or below). Each bucket is 5 % wide
/// (hdrhistogram's log buckets), so the curve climbs across it and stays flat between
/// buckets that hold something.
fn cdf_of(buckets: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let total: f64 = buckets.iter().map(|b| b.1).sum();
    let mut acc = 0.0;
    let mut out = Vec::new();
    if total <= 0.0 {
        return out;
    }
    for &(upper, count) in buckets {
        out.push((upper / 1.05, acc / total));
        acc += count;
        out.push((upper, acc / total));
    }
    out
}

/// The round trip at quantile `q` of merged buckets: the upper bound of the bucket that
/// reaches it (5 % coarse, where a group's own percentiles are exact).
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total: f64 = buckets.iter().map(|b| b.1).sum();
    let mut acc = 0.0;
    for &(upper, count) in buckets {
        acc += count;
        if acc >= q * total && total > 0.0 {
            return Some(upper);
        }
    }
    None
}

fn cdf_plot(title: &str, traffic: &Value) -> String {
    let (a, d) = (buckets(&traffic["anycast"]), buckets(&traffic["direct"]));
    cdf_plot_of(title, &a, &d)
}

/// A chart of fractions (0 to 1) over 0..`xmax`, captioned, its axes labelled.
fn fraction_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    title: &str,
    xmax: f64,
    (x_desc, y_desc): (&str, &str),
) -> Result<
    ChartContext<
        'a,
        SVGBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    String,
> {
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(44)
        .build_cartesian_2d(0f64..xmax, 0f64..1.0)
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(|e| e.to_string())?;
    Ok(chart)
}

fn cdf_plot_of(title: &str, anycast: &[(f64, f64)], direct: &[(f64, f64)]) -> String {
    let (a, d) = (cdf_of(anycast), cdf_of(direct));
    let xmax = held(a.iter().chain(&d).map(|p| p.0).fold(1.0, f64::max) * 1.05, 1.0, AXIS_MAX);
    let on_axes = |points: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
        points.into_iter().map(|(x, y)| (held(x, 0.0, xmax), held(y, 0.0, 1.0))).collect()
    };
    let (a, d) = (on_axes(a), on_axes(d));
    svg(SIZE, |root| {
        let mut chart = fraction_chart(root, title, xmax, ("round trip (ms)", "fraction of round trips"))?;
        for (points, color, name) in [(a, ANYCAST, "anycast"), (d, DIRECT, "direct")] {
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| e.to_string())
    })
}

/// p50 per second for both paths (left axis) and anycast loss per second (right), with a
/// red line at every fault.
fn time_plot(title: &str, traffic: &Value, faults: &[(f64, String)], duration: f64) -> String {
    let series = |path: &str| -> Vec<(f64, Option<f64>, f64)> {
        arr(&traffic[path]["series"])
            .iter()
            .map(|s| {
                let (sent, received) = (f(&s["sent"]), f(&s["received"]));
                let loss = if sent > 0.0 { 100.0 * (sent - received).max(0.0) / sent } else { 0.0 };
                let end = duration.max(1.0);
                let p50 = s["p50_ms"].as_f64().map(|p| held(p, 0.0, AXIS_MAX));
                (held(f(&s["t_s"]) + 0.5, 0.0, end), p50, held(loss, 0.0, 100.0))
            })
            .collect()
    };
    let (a, d) = (series("anycast"), series("direct"));
    let ymax = a.iter().chain(&d).filter_map(|p| p.1).fold(1.0, f64::max) * 1.15;
    svg(SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(44)
            .right_y_label_area_size(44)
            .build_cartesian_2d(0f64..duration.max(1.0), 0f64..ymax)
            .map_err(|e| e.to_string())?
            .set_secondary_coord(0f64..duration.max(1.0), 0f64..100.0);
        chart.configure_mesh().x_desc("time (s)").y_desc("p50 round trip (ms)").draw().map_err(|e| e.to_string())?;
        chart.configure_secondary_axes().y_desc("anycast loss (%)").draw().map_err(|e| e.to_string())?;
        for (points, color, name) in [(&a, ANYCAST, "anycast p50"), (&d, DIRECT, "direct p50")] {
            let line: Vec<(f64, f64)> = points.iter().filter_map(|&(t, p, _)| p.map(|p| (t, p))).collect();
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        let loss: Vec<(f64, f64)> = a.iter().map(|&(t, _, l)| (t, l)).collect();
        chart
            .draw_secondary_series(LineSeries::new(loss, BLACK.mix(0.5)))
            .map_err(|e| e.to_string())?
            .label("anycast loss %")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.5)));
        for (at, _) in faults {
            let at = held(*at, 0.0, duration.max(1.0));
            chart
                .draw_series(std::iter::once(PathElement::new(vec![(at, 0.0), (at, ymax)], FAULT.stroke_width(1))))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| e.to_string())
    })
}

/// Natural Earth's land at 1:110m (public domain; data/geo/README.md): one ring a line,
/// `lon,lat` pairs.
const LAND: &str = include_str!("../../data/geo/land.txt");

/// Groups named on the map and plotted one by one; a larger world is summed up.
const GROUPS_IN_FULL_MAX: usize = 24;

/// The land's rings clipped to a longitude/latitude box (Sutherland–Hodgman: a ring
/// clipped by a rectangle stays one ring).
fn land_in(x0: f64, x1: f64, y0: f64, y1: f64) -> Vec<Vec<(f64, f64)>> {
    let rings = LAND.lines().filter(|l| !l.starts_with('#')).map(|l| {
        l.split(' ')
            .filter_map(|p| {
                let (x, y) = p.split_once(',')?;
                Some((x.parse::<f64>().ok()?, y.parse::<f64>().ok()?))
            })
            .collect::<Vec<_>>()
    });
    // (inside, crossing point) for each of the box's four edges.
    type Edge = (fn(&(f64, f64), f64) -> bool, fn((f64, f64), (f64, f64), f64) -> (f64, f64), f64);
    let at_x = |a: (f64, f64), b: (f64, f64), x: f64| (x, a.1 + (b.1 - a.1) * (x - a.0) / (b.0 - a.0));
    let at_y = |a: (f64, f64), b: (f64, f64), y: f64| (a.0 + (b.0 - a.0) * (y - a.1) / (b.1 - a.1), y);
    let edges: [Edge; 4] = [
        (|p, v| p.0 >= v, at_x, x0),
        (|p, v| p.0 <= v, at_x, x1),
        (|p, v| p.1 >= v, at_y, y0),
        (|p, v| p.1 <= v, at_y, y1),
    ];
    rings
        .filter_map(|ring| {
            let mut pts = ring;
            for (inside, cross, v) in edges {
                let mut out = Vec::with_capacity(pts.len());
                for (i, &p) in pts.iter().enumerate() {
                    let prev = pts[(i + pts.len() - 1) % pts.len()];
                    match (inside(&prev, v), inside(&p, v)) {
                        (true, true) => out.push(p),
                        (true, false) => out.push(cross(prev, p, v)),
                        (false, true) => {
                            out.push(cross(prev, p, v));
                            out.push(p);
                        }
                        (false, false) => {}
                    }
                }
                pts = out;
                if pts.is_empty() {
                    return None;
                }
            }
            (pts.len() >= 3).then_some(pts)
        })
        .collect()
}

/// POPs, regions and client groups by longitude and latitude over the land; each group
/// joined to the POP it starts on (blue) and to each POP faults move it to (red). A large
/// world's groups are dots without names.
fn map(r: &Value) -> String {
    let place = |p: &Value| {
        let (x, y) = lon_lat(&p["location"]);
        (p["name"].as_str().unwrap_or("").to_string(), x, y)
    };
    let pops: Vec<(String, f64, f64)> = arr(&r["pops"]).iter().map(place).collect();
    let regions: Vec<(String, f64, f64)> = arr(&r["regions"]).iter().map(place).collect();
    let by_name: std::collections::HashMap<&str, (f64, f64)> =
        pops.iter().map(|p| (p.0.as_str(), (p.1, p.2))).collect();
    let at = |name: &str| by_name.get(name).copied();
    let clients = arr(&r["clients"]);
    let few = clients.len() <= GROUPS_IN_FULL_MAX;
    let all = pops.iter().chain(&regions).map(|p| (p.1, p.2)).chain(clients.iter().map(|c| lon_lat(&c["location"])));
    let (mut x0, mut x1, mut y0, mut y1) = (180f64, -180f64, 90f64, -90f64);
    for (x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let (px, py) = (((x1 - x0) * 0.08).max(2.0), ((y1 - y0) * 0.12).max(2.0));
    let (x0, x1, y0, y1) = ((x0 - px).max(-180.0), (x1 + px).min(180.0), (y0 - py).max(-90.0), (y1 + py).min(90.0));
    let land = land_in(x0, x1, y0, y1);
    // Small markers, thin lines and no names when there are many groups.
    let (dot, line) = if few { (4, 0.6) } else { (2, 0.25) };
    svg((1120, 520), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "POPs (blue squares), regions (red triangles), client groups (dots: green to dark red as routing inflates their round trip over the nearest POP, 0 to 50 ms; grey: no route) and their catchments",
                ("sans-serif", 16),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(40)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("longitude")
            .y_desc("latitude")
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| e.to_string())?;
        let ground = RGBColor(0xe4, 0xe4, 0xdc);
        chart
            .draw_series(land.into_iter().map(|ring| Polygon::new(ring, ground.filled())))
            .map_err(|e| e.to_string())?;
        for c in clients {
            let me = lon_lat(&c["location"]);
            if let Some(p) = c["pop"].as_str().and_then(at) {
                chart
                    .draw_series(std::iter::once(PathElement::new(vec![me, p], ANYCAST.mix(line))))
                    .map_err(|e| e.to_string())?;
            }
            for change in arr(&c["catchment"]) {
                if let Some(p) = change["pop"].as_str().and_then(at) {
                    let moved = PathElement::new(vec![me, p], FAULT.mix(0.7).stroke_width(1));
                    chart.draw_series(std::iter::once(moved)).map_err(|e| e.to_string())?;
                }
            }
            let name =
                if few { format!("{} ({})", c["name"].as_str().unwrap_or(""), c["count"]) } else { String::new() };
            let marker = EmptyElement::at(me)
                + Circle::new((0, 0), dot, inflation_colour(c["route"]["inflation_ms"].as_f64()).filled())
                + Text::new(name, (7, 2), ("sans-serif", 11));
            chart.draw_series(std::iter::once(marker)).map_err(|e| e.to_string())?;
        }
        for (name, x, y) in &pops {
            let name = if few || pops.len() <= 40 { name.clone() } else { String::new() };
            let marker = EmptyElement::at((*x, *y))
                + Rectangle::new([(-3 - dot, -3 - dot), (3 + dot, 3 + dot)], ANYCAST.filled())
                + Text::new(name, (8, -6), ("sans-serif", 12).into_font().color(&ANYCAST));
            chart.draw_series(std::iter::once(marker)).map_err(|e| e.to_string())?;
        }
        for (name, x, y) in &regions {
            let name = if regions.len() <= 40 { format!("region {name}") } else { String::new() };
            let marker = EmptyElement::at((*x, *y))
                + TriangleMarker::new((0, 0), 8, FAULT.filled())
                + Text::new(name, (8, 4), ("sans-serif", 12).into_font().color(&FAULT));
            chart.draw_series(std::iter::once(marker)).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// A span of a timeline row: from, to (s), its colour, its text.
type Span = (f64, f64, RGBColor, String);
/// A timeline row: its name and its spans.
type Row = (String, Vec<Span>);

/// A row per item with coloured spans over time.
fn timeline(title: &str, rows: &[Row], duration: f64) -> String {
    let h = 90 + 26 * rows.len() as u32;
    svg((1120, h), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(10)
            .build_cartesian_2d(0f64..duration.max(1.0), 0f64..rows.len().max(1) as f64)
            .map_err(|e| e.to_string())?;
        chart.configure_mesh().x_desc("time (s)").y_labels(0).disable_y_mesh().draw().map_err(|e| e.to_string())?;
        for (i, (label, spans)) in rows.iter().enumerate() {
            for (k, (from, to, color, text)) in spans.iter().enumerate() {
                let end = duration.max(1.0);
                let (from, to) = (&held(*from, 0.0, end), &held(*to, 0.0, end));
                // The row's name rides on its first span.
                let text = if k == 0 { format!("{label}: {text}") } else { text.clone() };
                let y = i as f64;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(*from, y + 0.15), (*to, y + 0.85)],
                        color.mix(0.8).filled(),
                    )))
                    .map_err(|e| e.to_string())?;
                chart
                    .draw_series(std::iter::once(Text::new(text, (*from, y + 0.7), ("sans-serif", 11))))
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    })
}

fn health_rows(r: &Value, duration: f64) -> Vec<Row> {
    arr(&r["backends"])
        .iter()
        .map(|b| {
            let states = arr(&b["health"]);
            let spans = states
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let to = states.get(i + 1).map_or(duration, |n| f(&n["at_s"]));
                    let healthy = h["state"] == "healthy";
                    let color = if healthy { RGBColor(0x2c, 0xa0, 0x2c) } else { FAULT };
                    (f(&h["at_s"]), to, color, h["state"].as_str().unwrap_or("").to_string())
                })
                .collect();
            (b["address"].as_str().unwrap_or("").to_string(), spans)
        })
        .collect()
}

fn leader_rows(r: &Value, duration: f64) -> Vec<Row> {
    let leaders = arr(&r["control"]["leaders"]);
    let spans = leaders
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let to = leaders.get(i + 1).map_or(duration, |n| f(&n["at_s"]));
            let (color, text) = match l["leader"].as_str() {
                Some(who) => (ANYCAST, format!("{who}, term {}", l["term"])),
                None => (FAULT, "no leader".to_string()),
            };
            (f(&l["at_s"]), to, color, text)
        })
        .collect();
    vec![("leader".to_string(), spans)]
}

/// What the figures rest on: each delay model's name and source, and the pinned pairs.
fn models_paragraph(m: &Value) -> String {
    if m.is_null() {
        return String::new();
    }
    let model = |v: &Value| {
        format!("<b>{}</b> ({})", esc(v["name"].as_str().unwrap_or("?")), esc(v["source"].as_str().unwrap_or("?")))
    };
    let pinned = arr(&m["internet_pinned"]);
    let pinned = match pinned.len() {
        0 => String::new(),
        _ => format!(
            "; measured round trips pinned: {}",
            esc(&pinned.iter().filter_map(|p| p.as_str()).collect::<Vec<_>>().join(", "))
        ),
    };
    format!(
        "<p>Delay models: internet {} plus {} ms of last mile ({}){pinned}; backbone {}. Catchments: {}.</p>",
        model(&m["internet"]),
        m["internet_last_mile_ms"],
        esc(m["internet_last_mile_source"].as_str().unwrap_or("not stated")),
        model(&m["backbone"]),
        esc(m["internet_routing"].as_str().unwrap_or("not stated"))
    )
}

/// A row of the client-group table: group, traffic, POP, then each path's p50 / p99 and
/// loss.
fn group_row(c: &Value, t: &Value) -> String {
    let p = |path: &str| {
        let q = &t[path]["rtt_ms"];
        if q.is_null() { "-".to_string() } else { format!("{} / {}", q["p50"], q["p99"]) }
    };
    format!(
        "<tr><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{} %</td><td>{}</td><td>{} %</td></tr>",
        esc(c["name"].as_str().unwrap_or("")),
        esc(t["name"].as_str().unwrap_or("")),
        esc(t["protocol"].as_str().unwrap_or("")),
        esc(c["pop"].as_str().unwrap_or("-")),
        p("anycast"),
        t["anycast"]["loss_pct"],
        p("direct"),
        t["direct"]["loss_pct"]
    )
}

const GROUP_HEAD: &str = "<table><tr><th>group</th><th>traffic</th><th>POP</th><th>anycast p50 / p99 (ms)</th><th>loss</th><th>direct p50 / p99 (ms)</th><th>loss</th></tr>";

/// A group's traffic class plotted: its CDF and its seconds.
fn group_plots(c: &Value, t: &Value, faults: &[(f64, String)], duration: f64) -> String {
    let title = format!("{} · {}", c["name"].as_str().unwrap_or(""), t["name"].as_str().unwrap_or(""));
    format!(
        "<h3>{}</h3><div class=plots>{}{}</div>",
        esc(&title),
        cdf_plot(&format!("{title}: RTT CDF"), t),
        time_plot(&format!("{title}: over time"), t, faults, duration)
    )
}

/// What many groups sum to, by a key (a traffic class, a POP): groups, clients, requests
/// and the merged distribution of each path.
#[derive(Default)]
struct Sum {
    groups: std::collections::BTreeSet<usize>,
    clients: f64,
    sent: [f64; 2],
    received: [f64; 2],
    buckets: [Vec<Vec<(f64, f64)>>; 2],
}

impl Sum {
    fn add(&mut self, g: usize, c: &Value, t: &Value) {
        if self.groups.insert(g) {
            self.clients += f(&c["count"]);
        }
        for (i, path) in ["anycast", "direct"].into_iter().enumerate() {
            self.sent[i] += f(&t[path]["sent"]);
            self.received[i] += f(&t[path]["received"]);
            self.buckets[i].push(buckets(&t[path]));
        }
    }

    fn merged(&self, i: usize) -> Vec<(f64, f64)> {
        merged(self.buckets[i].iter().map(Vec::as_slice))
    }

    fn row(&self, key: &str) -> String {
        let mut row = format!("<tr><td>{}</td><td>{}</td><td>{}</td>", esc(key), self.groups.len(), self.clients);
        for i in 0..2 {
            let m = self.merged(i);
            let q = |q: f64| quantile(&m, q).map_or("-".to_string(), |v| format!("{v}"));
            let loss = if self.sent[i] > 0.0 {
                100.0 * (self.sent[i] - self.received[i]).max(0.0) / self.sent[i]
            } else {
                0.0
            };
            let _ = write!(row, "<td>{} / {}</td><td>{loss:.3} %</td>", q(0.5), q(0.99));
        }
        row + "</tr>"
    }
}

/// Sums a table by key, largest first.
fn sum_table(title: &str, what: &str, sums: &std::collections::BTreeMap<String, Sum>) -> String {
    let mut keys: Vec<(&String, &Sum)> = sums.iter().collect();
    keys.sort_by(|a, b| b.1.sent[0].total_cmp(&a.1.sent[0]).then(a.0.cmp(b.0)));
    let mut out = format!(
        "<h3>{title}</h3><table><tr><th>{what}</th><th>groups</th><th>clients</th><th>anycast p50 / p99 (ms)</th><th>loss</th><th>direct p50 / p99 (ms)</th><th>loss</th></tr>"
    );
    for (key, sum) in keys {
        out.push_str(&sum.row(key));
    }
    out + "</table>"
}

/// The client groups: each in full (a table row, its CDF and its seconds) for a small
/// world; for a larger one, sums by traffic class and by POP (percentiles from the merged
/// buckets, 5 % coarse) with a CDF per class, then the worst groups in full.
fn groups_section(r: &Value, faults: &[(f64, String)], duration: f64) -> String {
    let clients = arr(&r["clients"]);
    let mut out = String::from("<h2>Client groups</h2>");
    let plotted = |t: &Value| t["protocol"] != "syn-flood";
    if clients.len() <= GROUPS_IN_FULL_MAX {
        out.push_str(GROUP_HEAD);
        for c in clients {
            for t in arr(&c["traffic"]) {
                out.push_str(&group_row(c, t));
            }
        }
        out.push_str("</table>");
        for c in clients {
            for t in arr(&c["traffic"]).iter().filter(|t| plotted(t)) {
                out.push_str(&group_plots(c, t, faults, duration));
            }
        }
        return out;
    }
    let (mut by_class, mut by_pop) = (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
    let mut each: Vec<(&Value, &Value)> = Vec::new();
    for (g, c) in clients.iter().enumerate() {
        for t in arr(&c["traffic"]).iter().filter(|t| plotted(t)) {
            let class = format!("{} ({})", t["name"].as_str().unwrap_or(""), t["protocol"].as_str().unwrap_or(""));
            by_class.entry(class).or_insert_with(Sum::default).add(g, c, t);
            let pop = c["pop"].as_str().unwrap_or("-").to_string();
            by_pop.entry(pop).or_insert_with(Sum::default).add(g, c, t);
            each.push((c, t));
        }
    }
    let _ = write!(
        out,
        "<p>{} groups, {} clients: too many to plot one by one. Summed by traffic class and by the POP each group \
entered at the start (percentiles from the merged histogram buckets, each 5 % wide; a group's own are exact), then the \
{WORST} groups with the highest anycast p99 and the {WORST} with the most anycast loss, in full.</p>",
        clients.len(),
        clients.iter().map(|c| f(&c["count"])).sum::<f64>()
    );
    out.push_str(&sum_table("By traffic class", "traffic", &by_class));
    let mut classes: Vec<(&String, &Sum)> = by_class.iter().collect();
    classes.sort_by(|a, b| b.1.sent[0].total_cmp(&a.1.sent[0]).then(a.0.cmp(b.0)));
    out.push_str("<div class=plots>");
    for (class, sum) in classes.iter().take(CLASSES_PLOTTED_MAX) {
        out.push_str(&cdf_plot_of(&format!("{class}: RTT CDF, all its groups"), &sum.merged(0), &sum.merged(1)));
    }
    out.push_str("</div>");
    if classes.len() > CLASSES_PLOTTED_MAX {
        let _ = write!(out, "<p class=note>(the {CLASSES_PLOTTED_MAX} classes with the most requests are plotted)</p>");
    }
    out.push_str(&sum_table("By POP", "POP", &by_pop));
    let p99 = |t: &Value| t["anycast"]["rtt_ms"]["p99"].as_f64().unwrap_or(f64::INFINITY);
    let loss = |t: &Value| f(&t["anycast"]["loss_pct"]);
    let mut worst: Vec<usize> = Vec::new();
    let mut order: Vec<usize> = (0..each.len()).collect();
    order.sort_by(|&a, &b| p99(each[b].1).total_cmp(&p99(each[a].1)).then(a.cmp(&b)));
    worst.extend(order.iter().take(WORST));
    order.sort_by(|&a, &b| loss(each[b].1).total_cmp(&loss(each[a].1)).then(a.cmp(&b)));
    worst.extend(order.iter().filter(|i| !worst.contains(i)).take(WORST).copied().collect::<Vec<_>>());
    out.push_str("<h3>The worst groups</h3>");
    out.push_str(GROUP_HEAD);
    for &i in &worst {
        out.push_str(&group_row(each[i].0, each[i].1));
    }
    out.push_str("</table>");
    for &i in &worst {
        out.push_str(&group_plots(each[i].0, each[i].1, faults, duration));
    }
    out
}

/// Backends drawn on the health timeline one row each.
const HEALTH_ROWS_MAX: usize = 60;
/// Worst groups shown in full, by p99 and by loss each.
const WORST: usize = 10;
/// Traffic classes whose summed CDF is plotted.
const CLASSES_PLOTTED_MAX: usize = 12;

/// The report as a page; `table`, the terminal table when there is one.
pub fn render(r: &Value, table: Option<&str>) -> String {
    let simulated = f(&r["duration_s"]);
    let duration = held(simulated, 0.0, AXIS_MAX);
    let faults: Vec<(f64, String)> =
        arr(&r["faults"]).iter().map(|x| (f(&x["at_s"]), x["what"].as_str().unwrap_or("").to_string())).collect();
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=utf-8><title>anyedge: {name}</title><style>\
body{{font-family:sans-serif;margin:24px;color:#222}} h2{{margin-top:32px}} .plots{{display:flex;flex-wrap:wrap;gap:8px}} \
pre{{background:#f6f6f6;padding:12px;overflow-x:auto}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} \
th{{background:#eee}} td:first-child,th:first-child,.l{{text-align:left}} .note{{color:#888}}</style></head><body>\
<h1>anyedge simulation: {name}</h1><p>seed {seed}, {simulated} s simulated. Round trips are exact (nearest rank over every reply); \
<span style=color:#1f77b4>anycast</span> goes through the VIP's POPs and the backbone, <span style=color:#ff7f0e>direct</span> \
straight over the internet to the region. Red lines mark faults.</p>",
        name = esc(r["name"].as_str().unwrap_or("")),
        seed = r["seed"],
    );
    page.push_str(&models_paragraph(&r["models"]));
    if !faults.is_empty() {
        page.push_str("<h2>Faults</h2><table><tr><th>at (s)</th><th class=l>what</th><th>detected (ms)</th><th>flows affected</th><th>recovered</th><th>recovery p50 (ms)</th><th>changed backend</th></tr>");
        for x in arr(&r["faults"]) {
            let _ = write!(
                page,
                "<tr><td>{}</td><td class=l>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                cell(&x["at_s"]),
                esc(x["what"].as_str().unwrap_or("")),
                cell(&x["detected_ms"]),
                cell(&x["flows_affected"]),
                cell(&x["flows_recovered"]),
                cell(&x["recovery_ms"]["p50"]),
                cell(&x["flows_backend_changed"])
            );
        }
        page.push_str("</table>");
    }
    page.push_str("<h2>Map</h2>");
    page.push_str(&map(r));
    page.push_str(&inflation_section(r));
    page.push_str(&groups_section(r, &faults, duration));
    page.push_str("<h2 id=health>Backend health</h2>");
    let rows = health_rows(r, duration);
    if rows.len() <= HEALTH_ROWS_MAX {
        page.push_str(&timeline("backend health as CLB node 0 of its region saw it", &rows, duration));
    } else {
        // A large world: the backends whose health changed; the rest stayed as they began.
        let changed: Vec<Row> = rows.iter().filter(|(_, spans)| spans.len() > 1).cloned().collect();
        let _ = write!(
            page,
            "<p>{} backends; {} changed state during the run (plotted), the others kept their first state.</p>",
            rows.len(),
            changed.len()
        );
        if !changed.is_empty() {
            let shown = &changed[..changed.len().min(HEALTH_ROWS_MAX)];
            page.push_str(&timeline(
                "backends whose health changed, as CLB node 0 of its region saw it",
                shown,
                duration,
            ));
        }
    }
    if !r["control"].is_null() {
        page.push_str("<h2>Control plane</h2>");
        page.push_str(&timeline("Raft leader and term", &leader_rows(r, duration), duration));
    }
    if let Some(table) = table {
        let _ = write!(page, "<h2>Report</h2><pre>{}</pre>", esc(table));
    }
    page.push_str("</body></html>\n");
    page
}

/// A group's colour on the map by its route's inflation over the nearest POP: green at
/// 0 ms to dark red at `INFLATION_RED_MS` and past; grey without a route.
fn inflation_colour(inflation_ms: Option<f64>) -> RGBColor {
    let Some(ms) = inflation_ms else { return RGBColor(0x99, 0x99, 0x99) };
    let x = (ms / INFLATION_RED_MS).clamp(0.0, 1.0);
    let mix = |a: f64, b: f64| (a + (b - a) * x).round() as u8;
    RGBColor(mix(0x2e as f64, 0x99 as f64), mix(0x9e as f64, 0x10 as f64), mix(0x44 as f64, 0x10 as f64))
}

/// The inflation at which a group's dot is fully red.
const INFLATION_RED_MS: f64 = 50.0;

/// Each routed client's inflation over its nearest POP (a group's, once per client; a
/// way shorter than straight counts as none), sorted: (ms, clients).
fn inflation_of_clients(r: &Value) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = arr(&r["clients"])
        .iter()
        .filter_map(|c| Some((c["route"]["inflation_ms"].as_f64()?.max(0.0), c["count"].as_f64().unwrap_or(1.0))))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// The distribution of the clients' inflation over their nearest POP: a CDF and its p50,
/// p90 and p99; nothing for a report without routes.
fn inflation_section(r: &Value) -> String {
    let v = inflation_of_clients(r);
    let total: f64 = v.iter().map(|x| x.1).sum();
    if v.is_empty() || total <= 0.0 {
        return String::new();
    }
    let mut seen = 0.0;
    let cdf: Vec<(f64, f64)> = v
        .iter()
        .map(|&(ms, n)| {
            seen += n;
            (ms, seen / total)
        })
        .collect();
    let at = |q: f64| cdf.iter().find(|p| p.1 >= q).map_or(0.0, |p| p.0);
    let xmax = cdf.last().map_or(1.0, |p| p.0).max(1.0) * 1.05;
    let plot = svg(SIZE, |root| {
        let title = "clients' inflation over their nearest POP";
        let mut chart = fraction_chart(root, title, xmax, ("inflation (ms)", "fraction of clients"))?;
        // A step at each client's inflation: up from the fraction below it.
        let below = std::iter::once(0.0).chain(cdf.iter().map(|p| p.1));
        let steps = cdf.iter().zip(below).flat_map(|(&(x, y), before)| [(x, before), (x, y)]);
        chart.draw_series(LineSeries::new(steps, ANYCAST.stroke_width(2))).map_err(|e| e.to_string())?;
        Ok(())
    });
    format!(
        "<h2>Inflation</h2><p>The round trip each client's route to its POP costs over the nearest POP publishing the VIP \
(the client↔POP leg alone): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms over {} clients.</p><div class=plots>{plot}</div>",
        at(0.5),
        at(0.9),
        at(0.99),
        total
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Figures far outside a chart's axes (a hand-edited or corrupt report) draw a page,
    /// not a panic: the report fuzzer's input had a backend's health change at 7.8e45 s,
    /// and plotters overflowed mapping it to a pixel.
    #[test]
    fn a_report_with_times_places_and_delays_far_off_its_axes_still_renders() {
        let far = [7.777777777777777e45, -1e300, 1e308];
        for x in far {
            let r = serde_json::json!({
                "duration_s": 2.0,
                "pops": [{ "name": "paris", "location": [x, x] }],
                "regions": [{ "name": "frankfurt", "location": [50.1, x] }],
                "clients": [{ "name": "london", "location": [x, -0.1], "count": 1, "pop": "paris" }],
                "backends": [{ "address": "198.19.20.1:7000", "health": [
                    { "at_s": 0.5, "state": "healthy" }, { "at_s": x, "state": "unhealthy" }
                ] }],
                "faults": [{ "at_s": x, "what": "far" }],
                "control": { "leaders": [{ "at_s": x, "leader": "c1", "term": 1 }] },
                "traffic": [{ "class": "game",
                    "anycast": { "series": [{ "t_s": x, "p50_ms": x, "sent": 1, "received": 1 }] },
                    "direct": { "series": [{ "t_s": 1.0, "p50_ms": x, "sent": 1, "received": 1 }] } }]
            });
            for duration in [2.0, x] {
                let mut r = r.clone();
                r["duration_s"] = serde_json::json!(duration);
                assert!(
                    render(&r, None).starts_with("<!doctype html>"),
                    "a page with {x} and a duration of {duration}"
                );
            }
        }
    }

    #[test]
    fn a_groups_dot_goes_from_green_to_red_with_inflation_and_grey_without_a_route() {
        let (green, red) = (inflation_colour(Some(0.0)), inflation_colour(Some(INFLATION_RED_MS)));
        assert!(green.1 > green.0 && red.0 > red.1, "{green:?} {red:?}");
        assert_eq!(inflation_colour(Some(-3.0)), green, "a way shorter than straight is no inflation");
        assert_eq!(inflation_colour(Some(400.0)), red);
        let half = inflation_colour(Some(INFLATION_RED_MS / 2.0));
        assert!(green.0 < half.0 && half.0 < red.0, "{half:?}");
        assert_eq!(inflation_colour(None), RGBColor(0x99, 0x99, 0x99));
    }

    #[test]
    fn the_inflation_distribution_weighs_each_group_by_its_clients_and_counts_a_shortcut_as_none() {
        let r = serde_json::json!({ "clients": [
            { "count": 8, "route": { "inflation_ms": 0.0 } },
            { "count": 1, "route": { "inflation_ms": -2.0 } },
            { "count": 1, "route": { "inflation_ms": 40.0 } },
            { "count": 5, "route": null },
        ]});
        assert_eq!(inflation_of_clients(&r), [(0.0, 8.0), (0.0, 1.0), (40.0, 1.0)]);
        let section = inflation_section(&r);
        assert!(section.contains("p50 0.0 ms, p90 0.0 ms, p99 40.0 ms over 10 clients"), "{section}");
        assert!(section.contains("<svg"), "{section}");
        assert!(inflation_section(&serde_json::json!({ "clients": [{ "count": 3 }] })).is_empty());
    }
}
