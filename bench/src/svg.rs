//! Minimal SVG line charts, written by hand: a plotting library with font handling was more
//! than two axes and a few polylines need.

use std::fmt::Write;

/// One named line.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG document with the series drawn on linear axes from 0.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h, left, right, top, bottom) = (800.0, 480.0, 80.0, 20.0, 40.0, 60.0);
    let pts = series.iter().flat_map(|s| s.points.iter());
    let xmax = nice_max(pts.clone().map(|p| p.0).fold(0.0, f64::max));
    let ymax = nice_max(pts.map(|p| p.1).fold(0.0, f64::max));
    let px = |x: f64| left + x / xmax * (w - left - right);
    let py = |y: f64| h - bottom - y / ymax * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="16">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    for i in 0..=5 {
        let fx = xmax * i as f64 / 5.0;
        let fy = ymax * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{x}" y1="{t}" x2="{x}" y2="{b}" stroke="#ddd"/><text x="{x}" y="{ty}" text-anchor="middle">{fx}</text>"##,
            x = px(fx),
            t = top,
            b = h - bottom,
            ty = h - bottom + 16.0,
            fx = trim(fx)
        );
        let _ = writeln!(
            s,
            r##"<line x1="{l}" y1="{y}" x2="{r}" y2="{y}" stroke="#ddd"/><text x="{tx}" y="{ty}" text-anchor="end">{fy}</text>"##,
            l = left,
            r = w - right,
            y = py(fy),
            tx = left - 6.0,
            ty = py(fy) + 4.0,
            fy = trim(fy)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (left + w - right) / 2.0,
        h - 16.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">{}</text>"#,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0,
        esc(y_label)
    );
    for (i, se) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = se
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for (x, y) in &se.points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                px(*x),
                py(*y)
            );
        }
        let ly = top + 16.0 * i as f64 + 8.0;
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="3" fill="{c}"/><text x="{}" y="{}">{}</text>"#,
            left + 12.0,
            ly,
            left + 30.0,
            ly + 5.0,
            esc(&se.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn trim(v: f64) -> String {
    if v >= 100.0 || v == v.round() {
        format!("{}", v.round())
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_round_up_and_points_land_inside() {
        assert_eq!(nice_max(7.3), 10.0);
        assert_eq!(nice_max(1800.0), 2000.0);
        assert_eq!(nice_max(0.0), 1.0);
        let svg = line_chart(
            "t <1>",
            "x",
            "y",
            &[Series {
                name: "a&b".into(),
                points: vec![(0.0, 0.0), (5.0, 50.0)],
            }],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t &lt;1&gt;") && svg.contains("a&amp;b"));
        assert_eq!(svg.matches("<polyline").count(), 1);
    }
}
