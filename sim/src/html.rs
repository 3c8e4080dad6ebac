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

/// The CDF points of a path's histogram buckets: (ms, fraction at or below).
fn cdf(path: &Value) -> Vec<(f64, f64)> {
    let buckets = arr(&path["histogram_ms"]);
    let total: f64 = buckets.iter().map(|b| f(&b[1])).sum();
    let mut acc = 0.0;
    let mut out = Vec::new();
    for b in buckets {
        acc += f(&b[1]);
        if total > 0.0 {
            out.push((f(&b[0]), acc / total));
        }
    }
    out
}

fn cdf_plot(title: &str, traffic: &Value) -> String {
    let (a, d) = (cdf(&traffic["anycast"]), cdf(&traffic["direct"]));
    let xmax = a.iter().chain(&d).map(|p| p.0).fold(1.0, f64::max) * 1.05;
    svg(SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(44)
            .build_cartesian_2d(0f64..xmax, 0f64..1.0)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("round trip (ms)")
            .y_desc("fraction of round trips")
            .draw()
            .map_err(|e| e.to_string())?;
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
                (f(&s["t_s"]) + 0.5, s["p50_ms"].as_f64(), loss)
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
            chart
                .draw_series(std::iter::once(PathElement::new(vec![(*at, 0.0), (*at, ymax)], FAULT.stroke_width(1))))
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

/// POPs, regions and client groups by longitude and latitude; each group joined to the
/// POP it starts on (blue) and to each POP faults move it to (red).
fn map(r: &Value) -> String {
    let pops: Vec<(String, f64, f64)> = arr(&r["pops"])
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or("").to_string(), f(&p["location"][1]), f(&p["location"][0])))
        .collect();
    let regions: Vec<(String, f64, f64)> = arr(&r["regions"])
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or("").to_string(), f(&p["location"][1]), f(&p["location"][0])))
        .collect();
    let at = |name: &str| pops.iter().find(|p| p.0 == name).map(|p| (p.1, p.2));
    let all = pops
        .iter()
        .chain(&regions)
        .map(|p| (p.1, p.2))
        .chain(arr(&r["clients"]).iter().map(|c| (f(&c["location"][1]), f(&c["location"][0]))));
    let (mut x0, mut x1, mut y0, mut y1) = (180f64, -180f64, 90f64, -90f64);
    for (x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let (px, py) = (((x1 - x0) * 0.08).max(2.0), ((y1 - y0) * 0.12).max(2.0));
    svg((1120, 520), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "POPs (blue squares), regions (red triangles), client groups (dots) and their catchments",
                ("sans-serif", 16),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(40)
            .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("longitude")
            .y_desc("latitude")
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| e.to_string())?;
        for c in arr(&r["clients"]) {
            let me = (f(&c["location"][1]), f(&c["location"][0]));
            if let Some(p) = c["pop"].as_str().and_then(at) {
                chart
                    .draw_series(std::iter::once(PathElement::new(vec![me, p], ANYCAST.mix(0.6))))
                    .map_err(|e| e.to_string())?;
            }
            for change in arr(&c["catchment"]) {
                if let Some(p) = change["pop"].as_str().and_then(at) {
                    let moved = PathElement::new(vec![me, p], FAULT.mix(0.7).stroke_width(1));
                    chart.draw_series(std::iter::once(moved)).map_err(|e| e.to_string())?;
                }
            }
            let name = format!("{} ({})", c["name"].as_str().unwrap_or(""), c["count"]);
            let marker = EmptyElement::at(me)
                + Circle::new((0, 0), 4, DIRECT.filled())
                + Text::new(name, (7, 2), ("sans-serif", 11));
            chart.draw_series(std::iter::once(marker)).map_err(|e| e.to_string())?;
        }
        for (name, x, y) in &pops {
            let marker = EmptyElement::at((*x, *y))
                + Rectangle::new([(-5, -5), (5, 5)], ANYCAST.filled())
                + Text::new(name.clone(), (8, -6), ("sans-serif", 12).into_font().color(&ANYCAST));
            chart.draw_series(std::iter::once(marker)).map_err(|e| e.to_string())?;
        }
        for (name, x, y) in &regions {
            let marker = EmptyElement::at((*x, *y))
                + TriangleMarker::new((0, 0), 8, FAULT.filled())
                + Text::new(format!("region {name}"), (8, 4), ("sans-serif", 12).into_font().color(&FAULT));
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
        "<p>Delay models: internet {} plus {} ms of last mile ({}){pinned}; backbone {}.</p>",
        model(&m["internet"]),
        m["internet_last_mile_ms"],
        esc(m["internet_last_mile_source"].as_str().unwrap_or("not stated")),
        model(&m["backbone"])
    )
}

/// The report as a page; `table`, the terminal table when there is one.
pub fn render(r: &Value, table: Option<&str>) -> String {
    let duration = f(&r["duration_s"]);
    let faults: Vec<(f64, String)> =
        arr(&r["faults"]).iter().map(|x| (f(&x["at_s"]), x["what"].as_str().unwrap_or("").to_string())).collect();
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=utf-8><title>anyedge: {name}</title><style>\
body{{font-family:sans-serif;margin:24px;color:#222}} h2{{margin-top:32px}} .plots{{display:flex;flex-wrap:wrap;gap:8px}} \
pre{{background:#f6f6f6;padding:12px;overflow-x:auto}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} \
th{{background:#eee}} td:first-child,th:first-child,.l{{text-align:left}} .note{{color:#888}}</style></head><body>\
<h1>anyedge simulation: {name}</h1><p>seed {seed}, {duration} s simulated. Round trips are exact (nearest rank over every reply); \
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
    page.push_str("<h2>Client groups</h2><table><tr><th>group</th><th>traffic</th><th>POP</th><th>anycast p50 / p99 (ms)</th><th>loss</th><th>direct p50 / p99 (ms)</th><th>loss</th></tr>");
    for c in arr(&r["clients"]) {
        for t in arr(&c["traffic"]) {
            let p = |path: &str| {
                let q = &t[path]["rtt_ms"];
                if q.is_null() { "-".to_string() } else { format!("{} / {}", q["p50"], q["p99"]) }
            };
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{} %</td><td>{}</td><td>{} %</td></tr>",
                esc(c["name"].as_str().unwrap_or("")),
                esc(t["name"].as_str().unwrap_or("")),
                esc(t["protocol"].as_str().unwrap_or("")),
                esc(c["pop"].as_str().unwrap_or("-")),
                p("anycast"),
                t["anycast"]["loss_pct"],
                p("direct"),
                t["direct"]["loss_pct"]
            );
        }
    }
    page.push_str("</table>");
    for c in arr(&r["clients"]) {
        for t in arr(&c["traffic"]) {
            if t["protocol"] == "syn-flood" {
                continue;
            }
            let title = format!("{} · {}", c["name"].as_str().unwrap_or(""), t["name"].as_str().unwrap_or(""));
            let _ = write!(page, "<h3>{}</h3><div class=plots>", esc(&title));
            page.push_str(&cdf_plot(&format!("{title}: RTT CDF"), t));
            page.push_str(&time_plot(&format!("{title}: over time"), t, &faults, duration));
            page.push_str("</div>");
        }
    }
    page.push_str("<h2 id=health>Backend health</h2>");
    page.push_str(&timeline("backend health as CLB node 0 of its region saw it", &health_rows(r, duration), duration));
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
