//! The sweep's HTML page: per metric, one SVG plot against each varied parameter (no
//! script, no external file), and the table.

use super::{Param, Spread, SweepReport, fmt};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Line colours (Tableau 10); past ten lines the colours repeat with a dash pattern, so
/// no two lines of a plot look the same.
const COLOURS: [&str; 10] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
const DASHES: [&str; 4] = ["", "6 3", "2 2", "8 3 2 3"];

/// The HTML page: per metric, one plot against each varied parameter — its values along
/// x, the metric's median over seeds up y with a bar from min to max, one line per
/// combination of the other parameters.
pub(super) fn page(r: &SweepReport) -> String {
    let mut html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>anyedge sweep {f}</title>\n<style>\
         body{{font:14px system-ui,sans-serif;margin:24px;color:#222}}h2{{margin-top:32px}}\
         .plots{{display:flex;flex-wrap:wrap;gap:16px}}figure{{margin:0}}figcaption{{font-size:12px;color:#555}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}</style></head>\n\
         <body><h1>anyedge sweep {f}</h1><p>{n} variants × {s} seeds (from {from}); each point is the median over \
         seeds, each bar its range.</p>\n",
        f = esc(&r.file),
        n = r.variants.len(),
        s = r.seeds,
        from = r.from
    );
    for (m, info) in r.metrics.iter().enumerate() {
        html += &format!("<h2>{}</h2><p>{}</p><div class=\"plots\">\n", esc(&info.name), esc(&info.means));
        for (p, param) in r.params.iter().enumerate() {
            html += &plot(r, m, p, param);
        }
        html += "</div>\n";
    }
    html += "<h2>Table</h2>\n<table><tr>";
    for p in &r.params {
        html += &format!("<th>{}</th>", esc(&p.path));
    }
    for m in &r.metrics {
        html += &format!("<th>{}</th>", esc(&m.name));
    }
    html += "<th>failed</th></tr>\n";
    for v in &r.variants {
        html += "<tr>";
        for s in &v.set {
            html += &format!("<td>{}</td>", esc(s));
        }
        for s in &v.metrics {
            html += &format!("<td>{} [{}–{}]</td>", fmt(s.median), fmt(s.min), fmt(s.max));
        }
        html += &format!("<td>{}</td></tr>\n", v.failed.len());
    }
    html += "</table>\n";
    for v in &r.variants {
        for f in &v.failed {
            html +=
                &format!("<p>seed {}: {} — <code>{}</code></p>\n", f.seed, esc(&f.failures.join("; ")), esc(&f.replay));
        }
    }
    html + "</body></html>\n"
}

/// One line of a plot: the other parameters' values, and its points (the index of the
/// plotted parameter's value, and the metric there).
type Line<'a> = (Vec<String>, Vec<(usize, &'a Spread)>);

/// A plot's size and scales: parameter value `i` at `x(i)`, metric value `v` at `y(v)`.
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    bottom: f64,
    top: f64,
    right: f64,
    values: usize,
    lo: f64,
    hi: f64,
}

impl Frame {
    /// A frame whose y axis holds every spread's range, from zero (or below it).
    fn new(values: usize, spreads: &[&Spread]) -> Frame {
        let all: Vec<f64> = spreads.iter().flat_map(|s| [s.min, s.max]).flatten().collect();
        let lo = all.iter().copied().fold(f64::INFINITY, f64::min).min(0.0);
        let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let hi = if hi.is_finite() && hi > lo { hi * 1.05 } else { lo + 1.0 };
        Frame { w: 420.0, h: 260.0, left: 56.0, bottom: 40.0, top: 12.0, right: 12.0, values: values.max(1), lo, hi }
    }

    fn x(&self, i: usize) -> f64 {
        self.left + (self.w - self.left - self.right) * (i as f64 + 0.5) / self.values as f64
    }

    fn y(&self, v: f64) -> f64 {
        self.h - self.bottom - (self.h - self.bottom - self.top) * (v - self.lo) / (self.hi - self.lo)
    }

    /// The axes, their ticks, the parameter's values and its name.
    fn axes(&self, param: &Param) -> String {
        let (b, r) = (self.h - self.bottom, self.w - self.right);
        let mut svg = format!(
            "<line x1=\"{l}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#888\"/><line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{b}\" stroke=\"#888\"/>\n",
            l = self.left,
            t = self.top
        );
        for k in 0..=4 {
            let v = self.lo + (self.hi - self.lo) * k as f64 / 4.0;
            let (x, y) = (self.left - 4.0, self.y(v) + 3.0);
            svg +=
                &format!("<text x=\"{x}\" y=\"{y:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>\n", fmt(Some(v)));
        }
        for (i, v) in param.values.iter().enumerate() {
            let (x, y) = (self.x(i), b + 16.0);
            svg += &format!("<text x=\"{x:.1}\" y=\"{y}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\n", esc(v));
        }
        let (x, y) = ((self.left + r) / 2.0, self.h - 6.0);
        svg + &format!(
            "<text x=\"{x:.1}\" y=\"{y}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\n",
            esc(&param.path)
        )
    }

    /// One line: medians joined, each with a bar from min to max.
    fn line(&self, colour: &str, dash: &str, points: &[(usize, &Spread)]) -> String {
        let path: Vec<String> = points
            .iter()
            .filter_map(|(i, s)| s.median.map(|m| format!("{:.1},{:.1}", self.x(*i), self.y(m))))
            .collect();
        let mut svg = String::new();
        if path.len() > 1 {
            svg += &format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" stroke-dasharray=\"{dash}\" points=\"{}\"/>\n",
                path.join(" ")
            );
        }
        for (i, s) in points {
            let x = self.x(*i);
            if let (Some(a), Some(b)) = (s.min, s.max) {
                let (y1, y2) = (self.y(a), self.y(b));
                svg += &format!(
                    "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{y1:.1}\" y2=\"{y2:.1}\" stroke=\"{colour}\" opacity=\"0.5\"/>\n"
                );
            }
            if let Some(m) = s.median {
                let y = self.y(m);
                svg += &format!(
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{colour}\"><title>{}</title></circle>\n",
                    fmt(Some(m))
                );
            }
        }
        svg
    }
}

/// The variants as lines against parameter `p`: those that agree on every other
/// parameter share a line.
fn lines<'a>(r: &'a SweepReport, m: usize, p: usize) -> Vec<Line<'a>> {
    let mut lines: Vec<Line<'a>> = Vec::new();
    for variant in &r.variants {
        let others: Vec<String> =
            variant.set.iter().enumerate().filter(|(i, _)| *i != p).map(|(_, s)| s.clone()).collect();
        let at = r.params[p].values.iter().position(|x| x == &variant.set[p]).unwrap_or(0);
        let point = (at, &variant.metrics[m]);
        match lines.iter_mut().find(|l| l.0 == others) {
            Some(l) => l.1.push(point),
            None => lines.push((others, vec![point])),
        }
    }
    lines
}

/// One SVG plot of metric `m` against parameter `p`, with its legend.
fn plot(r: &SweepReport, m: usize, p: usize, param: &Param) -> String {
    let spreads: Vec<&Spread> = r.variants.iter().map(|v| &v.metrics[m]).collect();
    let frame = Frame::new(param.values.len(), &spreads);
    let (w, h) = (frame.w, frame.h);
    let mut svg = format!("<figure><svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\">\n");
    svg += &frame.axes(param);
    let mut legend = Vec::new();
    for (li, (others, points)) in lines(r, m, p).iter().enumerate() {
        let colour = COLOURS[li % COLOURS.len()];
        let dash = DASHES[(li / COLOURS.len()) % DASHES.len()];
        svg += &frame.line(colour, dash, points);
        let others = r.params.iter().enumerate().filter(|(i, _)| *i != p).zip(others);
        let names: Vec<String> = others.map(|((_, q), v)| format!("{}={v}", q.path)).collect();
        if !names.is_empty() {
            let swatch = format!(
                "<svg width=\"22\" height=\"8\"><line x1=\"0\" y1=\"4\" x2=\"22\" y2=\"4\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/></svg>"
            );
            legend.push(format!("{swatch} {}", esc(&names.join(" "))));
        }
    }
    svg += "</svg>";
    format!("{svg}<figcaption>{}</figcaption></figure>\n", legend.join("<br>"))
}
